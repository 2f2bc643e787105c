//! Short codes such as `7-guitar-orbit` instead of tickets, as magic-wormhole and croc have them,
//! without their servers.
//!
//! The number (the *nameplate*) is public: both sides join the swarm topic derived from it, so they
//! find each other wherever the swarm looks (LAN, DHT, static peers). The words are the secret: on
//! the stream between the two, both run SPAKE2 with the whole code as the password and confirm the
//! key they got, bound to this very connection. A wrong code learns nothing about the right one
//! (the exchange reveals no more than "wrong"), and the side that made the code accepts one attempt
//! only, so guessing gets one try per code.

use pairs_base::Topic;
use pairs_net::BiStream;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// 256 short words, each a byte of the code's secret: distinct, lower case, easy to say and type.
const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adult", "agent", "album", "alpha", "amber", "angle", "ankle",
    "apple", "april", "arena", "argue", "arrow", "atlas", "audio", "award", "bacon", "badge",
    "bagel", "baker", "bamboo", "banjo", "barrel", "basil", "basin", "beach", "beard", "berry",
    "bison", "blade", "blank", "blaze", "blink", "bloom", "board", "bonus", "brave", "bread",
    "brick", "bride", "brook", "brush", "buddy", "bugle", "cabin", "cable", "camel", "canal",
    "candy", "canoe", "cargo", "carol", "cedar", "chalk", "charm", "chess", "chief", "cider",
    "civic", "clay", "cliff", "cloud", "clover", "coast", "cobra", "cocoa", "comet", "coral",
    "cotton", "crane", "crater", "crisp", "crown", "cube", "cupid", "curry", "daisy", "dance",
    "delta", "denim", "depot", "diary", "dingo", "disco", "diver", "dock", "donut", "dragon",
    "drum", "dune", "eagle", "easel", "echo", "elbow", "elder", "ember", "enjoy", "epic", "equal",
    "fable", "falcon", "fancy", "farm", "feast", "fence", "ferry", "fiber", "field", "flame",
    "flute", "focus", "forest", "fossil", "frost", "fruit", "galaxy", "garden", "gecko", "ghost",
    "giant", "ginger", "globe", "glove", "goose", "grape", "gravel", "guitar", "habit", "harbor",
    "hazel", "heron", "hockey", "honey", "hotel", "humor", "igloo", "index", "ivory", "jacket",
    "jaguar", "jelly", "jewel", "jolly", "judge", "juice", "jungle", "kayak", "kettle", "kiwi",
    "koala", "label", "ladder", "lagoon", "lemon", "lever", "lilac", "linen", "lizard", "llama",
    "lobby", "locket", "lotus", "lucky", "lunar", "magnet", "mango", "maple", "marble", "meadow",
    "melon", "metal", "mint", "mirror", "monkey", "mosaic", "motor", "muffin", "music", "napkin",
    "nectar", "needle", "noble", "noodle", "north", "oasis", "ocean", "olive", "onion", "opera",
    "orbit", "orchid", "otter", "oyster", "paddle", "panda", "paper", "parrot", "peach", "pebble",
    "pepper", "piano", "pilot", "pixel", "planet", "plum", "polar", "pony", "poppy", "prism",
    "puzzle", "quartz", "quiet", "rabbit", "radar", "raven", "ribbon", "river", "robin", "rocket",
    "ruby", "saddle", "salad", "salmon", "sandal", "satin", "shadow", "silver", "sketch", "socket",
    "spider", "spring", "squid", "stable", "storm", "sugar", "summer", "sunset", "tango", "temple",
    "tiger", "timber", "toast", "topaz", "tulip", "turtle", "velvet", "violin", "waffle", "walnut",
    "willow", "window", "winter", "yogurt", "zebra",
];

/// Nameplates are drawn from 1 to this: short to type, and few enough that the swarm topic of one
/// is quickly found.
const NAMEPLATES: u16 = 99;
/// Domain separation for the PAKE and the swarm topic.
const LABEL: &[u8] = b"pairs code v1";

/// A short code: a public nameplate and two secret words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    nameplate: u16,
    words: [u8; 2],
}

impl Code {
    /// A fresh random code.
    pub fn generate() -> Self {
        Self {
            nameplate: fastrand::u16(1..=NAMEPLATES),
            words: [fastrand::u8(..), fastrand::u8(..)],
        }
    }

    /// Reads a code as people type it (`7-guitar-orbit`, any case, spaces around); `None` if `text`
    /// is not shaped like one.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim().to_ascii_lowercase();
        let mut parts = text.split('-');
        let nameplate: u16 = parts.next()?.parse().ok()?;
        let mut words = [0u8; 2];
        for word in &mut words {
            let part = parts.next()?;
            *word = WORDS.iter().position(|w| *w == part)? as u8;
        }
        (parts.next().is_none() && (1..=NAMEPLATES).contains(&nameplate))
            .then_some(Self { nameplate, words })
    }

    /// Whether `text` looks like a code someone meant (a number, then words), right or not: such
    /// text gets a code's error messages rather than a ticket's.
    pub fn looks_like_one(text: &str) -> bool {
        let mut parts = text.trim().split('-');
        parts.next().is_some_and(|n| n.parse::<u16>().is_ok())
            && parts
                .next()
                .is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphabetic()))
    }

    /// The swarm topic both sides join: derived from the nameplate alone.
    pub fn topic(&self) -> Topic {
        Topic::from_name(&format!(
            "{} nameplate {}",
            String::from_utf8_lossy(LABEL),
            self.nameplate
        ))
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.nameplate, WORDS[self.words[0] as usize], WORDS[self.words[1] as usize]
        )
    }
}

/// Why a code exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// The peer knows another code (or guessed).
    #[error("wrong code: the other side has a different one")]
    Wrong,
    /// The peer's message was not a PAKE message.
    #[error("the peer sent a malformed code exchange")]
    Malformed,
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Runs the PAKE on `stream` (a stream with the peer met under [`Code::topic`]): `Ok` if the peer
/// knows the same code. `initiator` must differ between the two sides (the swarm says which each
/// is); `binding` is the connection's channel binding, so the key confirmed is this connection's.
pub async fn authenticate(
    code: &Code,
    stream: &mut BiStream,
    initiator: bool,
    binding: [u8; 32],
) -> Result<(), CodeError> {
    let (state, ours) = Spake2::<Ed25519Group>::start_symmetric(
        &Password::new(code.to_string().as_bytes()),
        &Identity::new(LABEL),
    );
    stream.write_all(&ours).await?;
    let mut theirs = vec![0u8; ours.len()];
    stream.read_exact(&mut theirs).await?;
    let key = state.finish(&theirs).map_err(|_| CodeError::Malformed)?;
    let key: [u8; 32] = blake3::derive_key("pairs code v1 key", &key);
    let confirm = |role: u8| {
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(&[role]).update(&binding);
        *hasher.finalize().as_bytes()
    };
    let (mine, expected) = if initiator {
        (confirm(1), confirm(2))
    } else {
        (confirm(2), confirm(1))
    };
    stream.write_all(&mine).await?;
    let mut got = [0u8; 32];
    stream.read_exact(&mut got).await?;
    // blake3::Hash compares in constant time.
    if blake3::Hash::from_bytes(got) != blake3::Hash::from_bytes(expected) {
        // The peer learns it too from our confirmation: make sure that arrives before whatever
        // comes next closes the connection (its end of the stream says it read ours).
        let _ = stream.shutdown().await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(LINGER, stream.read_to_end(&mut rest)).await;
        return Err(CodeError::Wrong);
    }
    Ok(())
}

/// How long a side waits for its peer to take its last message before the connection may close.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest ticket [`offered`] accepts.
const MAX_TICKET: usize = 4096;
/// What the receiver sends once it holds everything the ticket named.
const RECEIVED: u8 = b'K';

/// After [`authenticate`], by the side that makes the code of `pairs send --code`: hands the
/// peer the ticket of what to fetch. The ticket travels on the authenticated stream, so the peer
/// can trust the hash it names (and every byte is checked against that hash).
pub async fn offer(stream: &mut BiStream, ticket: &str) -> Result<(), CodeError> {
    let len = u16::try_from(ticket.len())
        .ok()
        .filter(|len| usize::from(*len) <= MAX_TICKET)
        .ok_or(CodeError::Malformed)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(ticket.as_bytes()).await?;
    stream.flush().await?;
    Ok(())
}

/// The other half of [`offer`]: the ticket the peer offered.
pub async fn offered(stream: &mut BiStream) -> Result<String, CodeError> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_TICKET {
        return Err(CodeError::Malformed);
    }
    let mut ticket = vec![0u8; len];
    stream.read_exact(&mut ticket).await?;
    String::from_utf8(ticket).map_err(|_| CodeError::Malformed)
}

/// Tells the side that offered that everything arrived: it may stop serving.
pub async fn confirm(stream: &mut BiStream) -> Result<(), CodeError> {
    stream.write_all(&[RECEIVED]).await?;
    stream.shutdown().await?;
    // The peer ends its side once it read ours: wait for that (briefly), so the confirmation is
    // not lost to a connection closed right after it was written.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LINGER, stream.read_to_end(&mut rest)).await;
    Ok(())
}

/// Waits for the peer's [`confirm`]: `Ok(true)` once it came, `Ok(false)` if the peer ended
/// without it (its fetch failed or was stopped).
pub async fn confirmed(stream: &mut BiStream) -> Result<bool, CodeError> {
    let mut byte = [0u8; 1];
    match stream.read_exact(&mut byte).await {
        Ok(_) if byte[0] == RECEIVED => {
            let _ = stream.shutdown().await;
            Ok(true)
        }
        Ok(_) => Err(CodeError::Malformed),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_as_written_and_words_are_distinct() {
        let mut sorted = WORDS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        for _ in 0..100 {
            let code = Code::generate();
            assert_eq!(Code::parse(&code.to_string()), Some(code.clone()));
            assert_eq!(Code::parse(&code.to_string().to_uppercase()), Some(code));
        }
        assert_eq!(Code::parse("7-guitar-nosuchword"), None);
        assert_eq!(Code::parse("0-guitar-orbit"), None);
        assert!(Code::looks_like_one("7-guitar-nosuchword"));
        assert!(!Code::looks_like_one("node7abc"));
    }
}
