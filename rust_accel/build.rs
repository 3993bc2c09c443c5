//! `cargo test` links libpython: record its directory as rpath so the test binaries find
//! it without `LD_LIBRARY_PATH`. A no-op for the extension module (maturin builds), which
//! does not link libpython.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
