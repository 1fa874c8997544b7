fn main() -> std::process::ExitCode {
    bastion::monitor::main()
}
