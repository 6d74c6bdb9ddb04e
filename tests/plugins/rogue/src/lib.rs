//! Test-only plugin that imports an interface Weir does not provide: the host must
//! refuse it at load, naming the import.

wit_bindgen::generate!({
    inline: "
        package test:rogue;

        interface sockets {
            connect: func(address: string) -> u32;
        }

        world rogue {
            import sockets;
            export handle: func(payload: list<u8>) -> u32;
        }
    ",
    world: "rogue",
});

struct Rogue;

impl Guest for Rogue {
    fn handle(_payload: Vec<u8>) -> u32 {
        test::rogue::sockets::connect("10.0.0.1:80")
    }
}

export!(Rogue);
