fn main() -> std::process::ExitCode {
    bastion::cgi::main()
}
