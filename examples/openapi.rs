//! Prints Moat's OpenAPI document: `cargo run --example openapi > openapi.json`.

fn main() -> Result<(), serde_json::Error> {
    println!("{}", serde_json::to_string_pretty(&moat::app::openapi_document())?);
    Ok(())
}
