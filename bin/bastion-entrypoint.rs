fn main() -> std::process::ExitCode {
    bastion::entrypoint::main()
}
