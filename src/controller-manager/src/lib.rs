//! The controller-manager's pure admission and rendering code as a library, for the fuzz targets
//! in `e2e/fuzz`: the webhook's AdmissionReview entry point ([`webhook::server::review`]) with the
//! per-kind rules it dispatches to, and the SpiderMultusConfig → NAD renderer
//! ([`multusconfig::render`]). The binary (`main.rs`) declares the same files as its own modules;
//! the library is built for other crates only (`test = false` in Cargo.toml), so the unit tests
//! in these files run once, with the binary's.

pub mod multusconfig {
    //! See the binary's `multusconfig` module; the controller is left out (it needs the runtime).
    pub mod defaults;
    pub mod render;
}

pub mod webhook {
    //! See the binary's `webhook` module; certificates, the caBundle watch and registration are
    //! left out (they need the process's arguments and the API server).
    pub mod annotations;
    pub mod common;
    pub mod coordinator;
    pub mod field;
    pub mod handlers;
    pub mod ippool;
    pub mod metrics;
    pub mod multusconfig;
    pub mod reservedip;
    pub mod server;
    pub mod subnet;
}
