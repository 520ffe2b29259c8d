// Packaging manifest only; see Cargo.toml.
