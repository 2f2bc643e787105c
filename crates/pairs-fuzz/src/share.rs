//! Shared folders: the changes a share's log carries, from any writer, folded into the tree.

use arbitrary::{Arbitrary, Unstructured};
use pairs::share::model::{self, Change, Diff, FileState, Tree, ValueId};
use pairs_base::SecretKey;
use pairs_log::{Entry, EntryBody, EntryId, Payload};

#[derive(Debug, Arbitrary)]
struct Written {
    author: u8,
    clock: u8,
    parents: Vec<u8>,
    content: Content,
}

#[derive(Debug, Arbitrary)]
enum Content {
    Changes(Vec<ChangeSpec>),
    Marked(Vec<u8>),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct ChangeSpec {
    path: PathSpec,
    state: StateSpec,
    supersedes: Vec<(u8, u8)>,
}

#[derive(Debug, Arbitrary)]
enum PathSpec {
    Known(u8),
    Any(String),
}

#[derive(Debug, Arbitrary)]
enum StateSpec {
    File {
        hash: u8,
        size: u64,
        executable: bool,
    },
    Link(PathSpec),
    Deleted,
}

const NAMES: &[&str] = &[
    "a",
    "a/b",
    "a/b/c.txt",
    "b.txt",
    "b.txt/x",
    ".hidden",
    "dir/.x.tar.gz",
    "x.pairs-part",
    "../up",
    "l",
    "dir/l",
];

fn path(spec: &PathSpec) -> String {
    match spec {
        PathSpec::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
        PathSpec::Any(text) => text.clone(),
    }
}

/// Entries of a share's log written by anyone (made-up changes, malformed batches, any bytes),
/// folded into the tree. Checks: the tree does not depend on the order the entries are folded in;
/// every path shown at its own name is a safe share path and every link stays inside the share;
/// changes made from the tree encode and decode back to themselves.
pub fn model(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(written) = Vec::<Written>::arbitrary(&mut u) else {
        return;
    };
    let log = SecretKey::from_bytes(&[1; 32]).node_id();
    let authors: Vec<_> = (1..4u8)
        .map(|i| SecretKey::from_bytes(&[i; 32]).node_id())
        .collect();
    let mut entries: Vec<Entry> = Vec::new();
    for (n, w) in written.iter().take(48).enumerate() {
        let pick_value = |&(e, i): &(u8, u8)| ValueId {
            entry: entries
                .get(usize::from(e))
                .map_or(EntryId([e; 32]), Entry::id),
            index: u32::from(i % 4),
        };
        let payloads = match &w.content {
            Content::Changes(changes) => {
                let changes: Vec<Change> = changes
                    .iter()
                    .take(16)
                    .map(|c| Change {
                        path: path(&c.path),
                        state: match &c.state {
                            StateSpec::File {
                                hash,
                                size,
                                executable,
                            } => FileState::File {
                                hash: [*hash; 32],
                                size: *size,
                                executable: *executable,
                                mtime: 0,
                            },
                            StateSpec::Link(target) => FileState::Symlink {
                                target: path(target),
                            },
                            StateSpec::Deleted => FileState::Deleted,
                        },
                        supersedes: c.supersedes.iter().take(8).map(pick_value).collect(),
                    })
                    .collect();
                let payloads = model::encode_changes(&changes);
                // Changes that fit in an entry come back as they went.
                let decoded: Vec<Change> = payloads
                    .iter()
                    .flat_map(|p| model::decode_changes(&entry_with(log, authors[0], p.clone())))
                    .collect();
                if changes.iter().all(|c| c.path.len() < 4096) {
                    assert_eq!(decoded, changes);
                }
                payloads
            }
            Content::Marked(bytes) => {
                let mut payload = b"\0pairs-share1".to_vec();
                payload.extend_from_slice(bytes);
                vec![Payload::Data(payload)]
            }
            Content::Raw(bytes) => vec![Payload::Data(bytes.clone())],
        };
        for (k, payload) in payloads.into_iter().enumerate() {
            let mut parents: Vec<EntryId> = w
                .parents
                .iter()
                .filter_map(|&p| entries.get(usize::from(p)).map(Entry::id))
                .collect();
            parents.sort();
            parents.dedup();
            entries.push(Entry::unsigned(EntryBody {
                log,
                author: authors[usize::from(w.author) % authors.len()],
                seq: (n * 4 + k) as u64,
                clock: u64::from(w.clock),
                parents,
                timestamp: n as u64,
                payload,
            }));
        }
    }
    let tree = Tree::fold(&entries);
    let reversed = Tree::fold(entries.iter().rev());
    let shown = tree.shown();
    assert_eq!(
        shown,
        reversed.shown(),
        "the tree depends on the folding order"
    );
    assert_eq!(tree.shadowed(), reversed.shadowed());
    for (name, item) in &shown {
        if !item.conflict {
            assert!(model::check_share_path(name).is_ok(), "{name:?} shown");
        }
        if let FileState::Symlink { target } = &item.version.state {
            assert!(
                model::check_link(&item.register, target).is_ok(),
                "{target:?}"
            );
        }
    }
    let half = Tree::fold(&entries[..entries.len() / 2]);
    let diff = Diff::between(&half, &tree);
    let _ = diff.is_empty();
    let _ = model::history(&entries);
    let _ = tree.totals();
    for name in NAMES.iter().take(4) {
        let _ = tree.versions(name);
        for change in [
            tree.change_for(name, FileState::Deleted),
            tree.change_from(name, FileState::Deleted, None),
        ] {
            let payloads = model::encode_changes(&change);
            let back: Vec<Change> = payloads
                .iter()
                .flat_map(|p| model::decode_changes(&entry_with(log, authors[0], p.clone())))
                .collect();
            assert_eq!(back, change);
        }
    }
}

fn entry_with(log: pairs_log::LogId, author: pairs_base::NodeId, payload: Payload) -> Entry {
    Entry::unsigned(EntryBody {
        log,
        author,
        seq: 0,
        clock: 0,
        parents: Vec::new(),
        timestamp: 0,
        payload,
    })
}
