fn main() -> std::process::ExitCode {
    n10n_dev::main()
}
