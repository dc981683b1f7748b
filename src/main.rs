fn main() {
    trm::util::alloc::keep_freed_memory();
    if trm::util::env::cpu_bf16() {
        trm::model::precision::allow_bf16_on_cpu(true);
    }
    if let Err(e) = trm::cli::run() {
        eprintln!("error: {e:#}");
        let interrupted = e.downcast_ref::<trm::util::interrupt::Interrupted>().is_some();
        std::process::exit(if interrupted { trm::util::interrupt::EXIT_CODE } else { 1 });
    }
}
