//! The six built-in workload kinds behind one trait; defined in `spiderpool-store` (the invariant
//! checker reads them too).

pub use spiderpool_store::workload::{Workload, view};
