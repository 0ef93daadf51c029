fn main() -> std::process::ExitCode {
    drover::cli::main(std::env::args_os())
}
