//! `keel`: an etcd-compatible key-value server.

fn main() {
    eprintln!("keel: the server arrives with the server issue");
    std::process::exit(2);
}
