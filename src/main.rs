fn main() {
    trm::util::alloc::keep_freed_memory();
    if let Err(e) = trm::cli::run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
