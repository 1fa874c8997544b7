fn main() -> std::process::ExitCode {
    bastion::gate::main()
}
