//! `casemate-img`: create, inspect, convert, resize and check disk images.
fn main() {
    eprintln!("casemate-img: not implemented yet");
    std::process::exit(2);
}
