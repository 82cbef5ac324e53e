//! The body of the `nbd` fuzz target (see [`super`]): the NBD server protocol core
//! (`hsb_domain::disk::nbd`) fed arbitrary bytes, whole and in arbitrary deliveries.

use hsb_domain::disk::nbd::{self, Event, Export, NbdError, Op, Server};

/// The export the input talks to.
const SIZE: u64 = 1 << 30;

/// What a session made of its input: events, the output, and how it ended.
fn session(input: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<u8>, Option<NbdError>) {
    let mut s = Server::new(Export {
        name: "hsb".into(),
        size: SIZE,
    });
    let (mut buf, mut out, mut evs) = (Vec::new(), Vec::new(), Vec::new());
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(fed, input.len());
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        loop {
            let before = out.len();
            let st = match s.step(&buf, &mut out) {
                Ok(st) => st,
                Err(e) => return (evs, out, Some(e)),
            };
            assert!(st.used <= buf.len(), "used more than it was given");
            // An answer is a few option replies or a simple reply, never sized by the input
            // beyond the export's name.
            assert!(
                out.len() - before <= 512,
                "an answer of {} bytes",
                out.len() - before
            );
            let ev = match st.event {
                Event::Incomplete { need } => {
                    assert!(need > buf.len() && need <= nbd::MAX_MESSAGE, "need {need}");
                    assert_eq!(st.used, 0);
                    break;
                }
                Event::Command(c) => {
                    let (offset, len) = match c.op {
                        Op::Read { offset, len } | Op::WriteZeroes { offset, len, .. } => {
                            (offset, u64::from(len))
                        }
                        Op::Write { offset, data, .. } => {
                            assert_eq!(st.used, nbd::REQUEST_LEN + data.len());
                            (offset, data.len() as u64)
                        }
                        Op::Flush => (0, 0),
                    };
                    assert!(len <= u64::from(nbd::MAX_PAYLOAD) && offset + len <= SIZE);
                    format!("{} {:?}", c.cookie, c.op)
                }
                Event::End => {
                    evs.push("end".into());
                    return (evs, out, None);
                }
                e => format!("{e:?}"),
            };
            evs.push(ev);
            buf.drain(..st.used);
        }
    }
    (evs, out, None)
}

/// Feed `data` to an NBD session: the first byte picks a valid prefix (none, the client flags,
/// or a whole handshake into transmission), the next ones where the input is cut into
/// deliveries. Checks: nothing panics, a step uses no more than it was given, asks for no more
/// than one bounded message, answers boundedly, commands stay inside the export and the maximum
/// payload, and the same bytes mean the same whatever their deliveries. Returns the events.
pub fn nbd(data: &[u8]) -> usize {
    let (&mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let (cut_bytes, body) = rest.split_at(rest.len().min(4));
    let mut input = Vec::new();
    if mode % 3 >= 1 {
        input.extend_from_slice(&3u32.to_be_bytes());
    }
    if mode % 3 == 2 {
        input.extend_from_slice(&nbd::IHAVEOPT.to_be_bytes());
        input.extend_from_slice(&nbd::OPT_GO.to_be_bytes());
        input.extend_from_slice(&6u32.to_be_bytes());
        input.extend_from_slice(&[0; 6]);
    }
    input.extend_from_slice(body);
    let mut cuts: Vec<usize> = cut_bytes
        .iter()
        .map(|&b| b as usize * input.len() / 256)
        .collect();
    cuts.sort_unstable();
    let whole = session(&input, &[]);
    let pieces = session(&input, &cuts);
    assert_eq!(whole, pieces, "deliveries changed the meaning");
    whole.0.len()
}
