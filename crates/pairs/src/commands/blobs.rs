//! `pairs send`, `pairs get` and `pairs blobs`: through the running node when there is one, else with
//! a node of their own for as long as they run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use pairs::Node;
use pairs::base::Ticket as _;
use pairs::blobs::store::ImportMode;
use pairs::blobs::ticket::BlobFormat;
use pairs::code::{self, Code};
use pairs::control::Client;
use pairs::control::server::{BlobRef, parse_blob_ref};
use pairs::node::GetProgress;

use super::{control, stop_requested, swarm_node};
use crate::cli::{BlobsCommand, GetArgs, SendArgs};

pub(super) fn bar(total: Option<u64>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec:>10}  {msg}  eta {eta}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub(super) fn update(bar: &ProgressBar, p: &GetProgress) {
    if let Some(total) = p.total {
        bar.set_length(total);
    }
    bar.set_position(p.held);
    let files = if p.files > 1 {
        format!(", {}/{} files", p.files_done, p.files)
    } else {
        String::new()
    };
    bar.set_message(format!(
        "{} peer{}{files}",
        p.peers,
        if p.peers == 1 { "" } else { "s" }
    ));
}

/// `pairs send`: prints a ticket, then serves until stopped.
pub(crate) async fn send(data_dir: Option<&Path>, isolated: bool, args: SendArgs) -> Result<()> {
    for path in &args.paths {
        if !path.exists() {
            bail!(
                "{} does not exist: name files or directories to send",
                path.display()
            );
        }
    }
    let dir = pairs::home::data_dir(data_dir)?;
    if let Some(mut client) = Client::connect(&dir).await? {
        let added = client.blob_add(&args.paths, args.copy, true, true).await?;
        if args.code {
            // The node serves the files; this command only hands its ticket to the code's peer.
            let mut stop = stop_requested();
            let node = swarm_node(data_dir, isolated, &args.discovery).await?;
            let result =
                send_by_code(&node, &added.ticket, &added, isolated, args.json, &mut stop).await;
            node.shutdown().await;
            result?;
            eprintln!(
                "the running node serves it from now on (stop: pairs blobs rm {})",
                added.hash
            );
            return Ok(());
        }
        print_ticket(
            &added.ticket,
            added.hash,
            added.size,
            added.files,
            args.json,
        );
        eprintln!(
            "the running node serves it from now on (stop: pairs blobs rm {})",
            added.hash
        );
        return Ok(());
    }
    let node = swarm_node(data_dir, isolated, &args.discovery).await?;
    let blobs = node.blobs();
    let mode = if args.copy {
        ImportMode::Copy
    } else {
        ImportMode::Reference
    };
    let added = blobs.add_named(&args.paths, mode).await?;
    blobs.share(added.hash).await?;
    let ticket = blobs.ticket(added.hash, added.format).to_ticket();
    // From here on a signal stops serving with a goodbye (while adding, it ends the command).
    let mut stop = stop_requested();
    if args.code {
        let summary = pairs::control::BlobAdded {
            hash: added.hash,
            collection: added.format == BlobFormat::Collection,
            size: added.size,
            files: added.files,
            ticket: ticket.clone(),
        };
        let result = send_by_code(&node, &ticket, &summary, isolated, args.json, &mut stop).await;
        // A send is for this run only: a later `pairs node` does not share it again.
        blobs.unshare(&added.hash);
        node.shutdown().await;
        return result;
    }
    print_ticket(&ticket, added.hash, added.size, added.files, args.json);
    eprintln!(
        "serving {} file{} ({}): on the other machine run  pairs get TICKET   (Ctrl-C stops)",
        added.files,
        if added.files == 1 { "" } else { "s" },
        HumanBytes(added.size)
    );
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let serving = async {
        loop {
            let (peers, sent) = blobs.upload_totals();
            spinner.set_message(format!("{peers} peers, {} sent", HumanBytes(sent)));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::select! {
        _ = &mut stop => {}
        _ = serving => {}
    }
    spinner.finish_and_clear();
    let (_, sent) = blobs.upload_totals();
    eprintln!(
        "sent {} in {:.1} s",
        HumanBytes(sent),
        started.elapsed().as_secs_f64()
    );
    // A send is for this run only: a later `pairs node` does not share it again.
    blobs.unshare(&added.hash);
    node.shutdown().await;
    Ok(())
}

/// `pairs send --code`: prints a code, hands `ticket` to the one peer that proves it knows the
/// code, and waits until that peer says it has everything.
async fn send_by_code(
    node: &Node,
    ticket: &str,
    added: &pairs::control::BlobAdded,
    isolated: bool,
    json: bool,
    stop: &mut super::Stop,
) -> Result<()> {
    let code = Code::generate();
    if isolated {
        // Nothing finds this node on its own: say how to point the receiver at it.
        eprintln!(
            "pairs: isolated; peers reach this node with --peer {}",
            node.ticket().unwrap_or_default()
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({
                "code": code.to_string(), "hash": added.hash.to_hex(), "size": added.size,
                "files": added.files,
            })
        );
    } else {
        println!("{code}");
    }
    eprintln!(
        "offering {} file{} ({}): on the other machine run  pairs get {code}   (Ctrl-C stops)",
        added.files,
        if added.files == 1 { "" } else { "s" },
        HumanBytes(added.size)
    );
    let super::Met {
        peer,
        mut stream,
        _topic,
    } = super::meet_by_code(node, &code, None, "pairs send --code", stop).await?;
    let who = peer.node_id();
    code::offer(&mut stream, ticket)
        .await
        .with_context(|| format!("sending the ticket to {}", who.short()))?;
    eprintln!("{} has the code; sending", who.short());
    let started = Instant::now();
    tokio::select! {
        confirmed = code::confirmed(&mut stream) => match confirmed {
            Ok(true) => {}
            Ok(false) | Err(_) => bail!(
                "{} stopped before it had everything; the code is spent: run `pairs send --code` again",
                who.short()
            ),
        },
        _ = &mut *stop => bail!("interrupted; the code is spent"),
    }
    eprintln!(
        "{} received {} in {:.1} s",
        who.short(),
        HumanBytes(added.size),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_ticket(ticket: &str, hash: pairs::blobs::Hash, size: u64, files: usize, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "ticket": ticket, "hash": hash.to_hex(), "size": size, "files": files })
        );
    } else {
        println!("{ticket}");
    }
}

/// `pairs get`.
pub(crate) async fn get(data_dir: Option<&Path>, isolated: bool, args: GetArgs) -> Result<()> {
    if !args.paths.is_empty() || args.version.is_some() {
        bail!(
            "PATH and --version are for share tickets (from `pairs share`); this is a blob ticket or hash"
        );
    }
    let mut stop = stop_requested();
    if Code::looks_like_one(&args.ticket) {
        return get_by_code(data_dir, isolated, &args, &mut stop).await;
    }
    let reference = parse_blob_ref(&args.ticket)?;
    let out = out_for(&reference, &args.out)?;
    let dir = pairs::home::data_dir(data_dir)?;
    if let Some(client) = Client::connect(&dir).await? {
        let via = Via::Running(client);
        return fetch(
            via,
            &args.ticket,
            reference,
            &out,
            args.json,
            RESUME,
            &mut stop,
        )
        .await;
    }
    let node = swarm_node(data_dir, isolated, &args.discovery).await?;
    let via = Via::Own(&node);
    let result = fetch(
        via,
        &args.ticket,
        reference,
        &out,
        args.json,
        RESUME,
        &mut stop,
    )
    .await;
    node.shutdown().await;
    result
}

/// Who fetches for `pairs get`.
enum Via<'a> {
    /// The running node, through its control API.
    Running(Client),
    /// This command's own node.
    Own(&'a Node),
}

/// `pairs get CODE`: meets the sender that made the code, takes the ticket it hands over, fetches
/// it (through the running node if there is one) and tells the sender it has everything.
async fn get_by_code(
    data_dir: Option<&Path>,
    isolated: bool,
    args: &GetArgs,
    stop: &mut super::Stop,
) -> Result<()> {
    let code = super::parse_code(&args.ticket, "pairs send --code")?;
    // A fresh node meets the sender even beside a running node, which then does the fetching.
    let node = swarm_node(data_dir, isolated, &args.discovery).await?;
    let result = async {
        let wait = Some(Duration::from_secs(args.timeout));
        let super::Met {
            peer,
            mut stream,
            _topic,
        } = super::meet_by_code(&node, &code, wait, "pairs send --code", stop).await?;
        let ticket = code::offered(&mut stream)
            .await
            .with_context(|| format!("receiving the ticket from {}", peer.node_id().short()))?;
        let reference = parse_blob_ref(&ticket)?;
        let out = out_for(&reference, &args.out)?;
        let via = match Client::connect(&pairs::home::data_dir(data_dir)?).await? {
            Some(client) => Via::Running(client),
            None => Via::Own(&node),
        };
        let resume = "a new code from `pairs send --code` resumes it";
        fetch(via, &ticket, reference, &out, args.json, resume, stop).await?;
        code::confirm(&mut stream).await?;
        Ok(())
    }
    .await;
    node.shutdown().await;
    result
}

/// Where a fetch writes: `-o`, else the current directory for a collection.
fn out_for(reference: &BlobRef, out: &Option<PathBuf>) -> Result<PathBuf> {
    Ok(match (reference, out) {
        (_, Some(out)) => out.clone(),
        (BlobRef::Ticket(t), None) if t.format == BlobFormat::Collection => PathBuf::from("."),
        _ => bail!(
            "this names a single blob, which has no file name: say where to write it with -o FILE"
        ),
    })
}

/// How a `pairs get` stopped by a signal is resumed.
const RESUME: &str = "run the same command again to resume";

/// Fetches what `ticket` (parsed: `reference`) names into `out`, with a progress bar, then the
/// summary. `resume`: how to go on after a signal stopped it.
async fn fetch(
    via: Via<'_>,
    ticket: &str,
    reference: BlobRef,
    out: &Path,
    json: bool,
    resume: &str,
    stop: &mut super::Stop,
) -> Result<()> {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        bar(None)
    };
    let started = Instant::now();
    let done = match via {
        Via::Running(mut client) => tokio::select! {
            result = client.blob_get(ticket, out, |p| update(&bar, p)) => result?,
            _ = &mut *stop => bail!("stopped: {resume}"),
        },
        Via::Own(node) => {
            let blobs = node.blobs();
            let progress = |p: &GetProgress| update(&bar, p);
            tokio::select! {
                result = async {
                    match reference {
                        BlobRef::Ticket(ticket) => blobs.get(&ticket, out, progress).await,
                        BlobRef::Hash(hash) => blobs.get_hash(hash, out, progress).await,
                    }
                } => result?,
                _ = &mut *stop => bail!("stopped: {resume}"),
            }
        }
    };
    bar.finish_and_clear();
    summary(&done, out, started.elapsed().as_secs_f64(), json);
    Ok(())
}

/// The line (or JSON object) that ends a fetch.
pub(super) fn summary(done: &GetProgress, out: &Path, secs: f64, json: bool) {
    let size = done.total.unwrap_or(done.held);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "out": out, "size": size, "files": done.files, "received": done.received,
                "resumed": done.resumed, "seconds": secs,
            })
        );
    } else {
        let resumed = if done.resumed > 0 {
            format!(", {} already here", HumanBytes(done.resumed))
        } else {
            String::new()
        };
        eprintln!(
            "got {} in {secs:.1} s ({}/s){resumed} -> {}",
            HumanBytes(size),
            HumanBytes((done.received as f64 / secs.max(0.001)) as u64),
            out.display()
        );
    }
}

/// `pairs blobs ...`.
pub(crate) async fn run(data_dir: Option<&Path>, command: BlobsCommand) -> Result<()> {
    let mut client = control(data_dir).await?;
    match command {
        BlobsCommand::Add { paths, copy } => {
            let added = client.blob_add(&paths, copy, false, false).await?;
            println!("{}", added.hash);
        }
        BlobsCommand::Ls { json } => {
            for row in client.blob_list().await? {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&serde_json::json!({
                            "hash": row.hash.to_hex(), "size": row.size, "held": row.held, "shared": row.shared,
                        }))?
                    );
                } else {
                    let state = if row.held >= row.size {
                        "complete".to_string()
                    } else {
                        format!("{}%", row.held * 100 / row.size.max(1))
                    };
                    println!(
                        "{}  {:>10}  {state}{}",
                        row.hash,
                        HumanBytes(row.size).to_string(),
                        if row.shared { "  shared" } else { "" }
                    );
                }
            }
        }
        BlobsCommand::Rm { hash } => client.blob_remove(parse_hash(&hash)?).await?,
        BlobsCommand::Export { hash, out } => client.blob_export(parse_hash(&hash)?, &out).await?,
    }
    Ok(())
}

fn parse_hash(text: &str) -> Result<pairs::blobs::Hash> {
    text.parse()
        .with_context(|| format!("{text:?}: see pairs blobs ls for the hashes held"))
}
