fn main() -> std::process::ExitCode {
    bastion::broker::main()
}
