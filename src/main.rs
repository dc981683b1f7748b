fn main() {
    trm::util::alloc::keep_freed_memory();
    if trm::util::env::cpu_bf16() {
        trm::model::precision::allow_bf16_on_cpu(true);
    }
    // A libtorch allocation that fails anywhere is an error naming it, not a panic (the
    // training loop catches it earlier, to say how to continue).
    trm::util::out_of_memory::install_hook();
    // A closed output (`trm info --list | head -1`) ends the command quietly, after unwinding
    // has removed its temporary files, with the code a shell gives a tool SIGPIPE stopped.
    trm::util::interrupt::install_closed_output_hook();
    let Some(result) = trm::util::interrupt::end_on_closed_output(|| trm::util::out_of_memory::catch(trm::cli::run)) else {
        std::process::exit(trm::util::interrupt::CLOSED_OUTPUT_EXIT_CODE);
    };
    let result = result.unwrap_or_else(|oom| Err(anyhow::anyhow!("{oom}\n{}", trm::util::out_of_memory::SMALLER_BATCHES)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        let interrupted = e.downcast_ref::<trm::util::interrupt::Interrupted>().is_some();
        std::process::exit(if interrupted { trm::util::interrupt::EXIT_CODE } else { 1 });
    }
}
