//! The book: ndshm's reference, rendered by rustdoc from the files in `docs/`.
//!
//! The crate root is the overview; each chapter here is one file of the repository's
//! `docs/` folder, so GitHub and rustdoc show the same text. The Rust examples marked
//! `rust` are compiled and run by `cargo test --doc`; fragments that need a setup they do
//! not show are marked `ignore`.
//!
//! | chapter | what is in it |
//! |---|---|
//! | [`arrays`] | create, attach, `open_raw` for Python's segments, numpy, save and load |
//! | [`parallel`] | [`ChunkPlan`](crate::ChunkPlan), fork per call, the warm [`WorkerPool`](crate::WorkerPool), failures |
//! | [`python`] | every Python `multiprocessing` name and its ndshm name, the seed's examples, element types, deliberate differences |
//! | [`robustness`] | nothing leaks, nothing hangs: `gc`, signal cleanup, the crash watchdog, faults of the primitives |
//! | [`trust_model`] | soundness across processes, who may open what, errors |
//! | [`limits`] | what is not done, and why |
//! | [`segment_layout`] | the bytes of a segment: `.npy` header, data, the 192-byte trailer |
//! | [`figures`] | every measured table, with the command that reproduces it |
//! | [`mpi`] | one segment per node across MPI ranks (feature `mpi`) |
//! | [`cli`] | the `ndshm` command line (crate `ndshm-cli`) |
//! | [`development`] | CI, and where things are in `src/` |
//!
//! (Links between chapters point at the `.md` files, as they do on GitHub.)

pub mod arrays {
    #![doc = include_str!("../docs/arrays.md")]
}
pub mod parallel {
    #![doc = include_str!("../docs/parallel.md")]
}
pub mod python {
    #![doc = include_str!("../docs/python.md")]
}
pub mod robustness {
    #![doc = include_str!("../docs/robustness.md")]
}
pub mod trust_model {
    #![doc = include_str!("../docs/trust-model.md")]
}
pub mod limits {
    #![doc = include_str!("../docs/limits.md")]
}
pub mod segment_layout {
    #![doc = include_str!("../docs/segment-layout.md")]
}
pub mod figures {
    #![doc = include_str!("../docs/figures.md")]
}
pub mod mpi {
    #![doc = include_str!("../docs/mpi.md")]
}
pub mod cli {
    #![doc = include_str!("../docs/cli.md")]
}
pub mod development {
    #![doc = include_str!("../docs/development.md")]
}
