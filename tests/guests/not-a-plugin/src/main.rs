fn main() {
    println!("I am a command, not an hxp-events plugin");
}
