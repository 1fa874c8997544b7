fn main() -> std::process::ExitCode {
    bastion::wrapper::main()
}
