fn main() {
    if let Err(e) = trm::cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
