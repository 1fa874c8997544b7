fn main() -> std::process::ExitCode {
    bastion::keys::main()
}
