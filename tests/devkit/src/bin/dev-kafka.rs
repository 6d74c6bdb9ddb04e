//! `dev-kafka [--port P] [--dir DIR] [--cluster]`: Apache Kafka in the foreground
//! for trying Weir by hand (`just broker-up`), until Ctrl-C. One KRaft node on
//! 127.0.0.1:P (default 9092), or with `--cluster` three nodes on free ports. Its
//! data stays in DIR, so a second run starts where the first stopped.

use std::path::PathBuf;

fn main() {
    let mut port = 9092;
    let mut dir = std::env::temp_dir().join("weir-dev-kafka");
    let mut cluster = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--dir" => dir = args.next().map(PathBuf::from).unwrap_or_else(|| usage()),
            "--cluster" => cluster = true,
            _ => usage(),
        }
    }
    let Some(kafka) = weir_devkit::find_kafka() else {
        eprintln!(
            "Apache Kafka is not installed: `just kafka` installs it into ~/.cache/weir/kafka"
        );
        std::process::exit(1);
    };
    eprintln!(
        "starting Apache Kafka {} in {}...",
        weir_devkit::KAFKA_VERSION,
        dir.display()
    );
    let running: Result<(String, Box<dyn std::any::Any>), String> = if cluster {
        weir_devkit::DevCluster::start(&kafka, &dir).map(|c| (c.bootstrap(), Box::new(c) as _))
    } else {
        weir_devkit::DevBroker::start_on(&kafka, &dir, port)
            .map(|b| (b.bootstrap(), Box::new(b) as _))
    };
    match running {
        Ok((bootstrap, _guard)) => {
            println!(
                "Apache Kafka is ready on {bootstrap} (Ctrl-C stops it; logs in {})",
                dir.display()
            );
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: dev-kafka [--port PORT] [--dir DIR] [--cluster]");
    std::process::exit(2);
}
