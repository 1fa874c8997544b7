fn main() -> std::process::ExitCode {
    bastion::agent::main()
}
