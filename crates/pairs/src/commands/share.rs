//! `pairs share`, `pairs sync` and `pairs get` of a share: through the running node when there is
//! one (it keeps the folder in step from then on), else with a node of their own until stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use indicatif::{HumanBytes, ProgressBar};
use pairs::Node;
use pairs::base::{NodeId, Ticket as _};
use pairs::control::{Client, ShareFiles};
use pairs::node::GetProgress;
use pairs::share::{FolderStatus, Quota, ShareHandle, ShareTicket};

use super::stop_requested;
use crate::cli::{DiscoveryArgs, GetArgs, ShareArgs, ShareCommand, SyncArgs};

/// A node for a folder: the data directory's own key, so that a writer admitted by its node id
/// stays that writer across runs.
async fn folder_node(
    data_dir: Option<&Path>,
    isolated: bool,
    args: &DiscoveryArgs,
) -> Result<Node> {
    super::node_with(data_dir, isolated, args, false).await
}

fn parse(ticket: &str) -> Result<ShareTicket> {
    Ok(ShareTicket::parse(ticket)?)
}

/// `pairs share [DIR | ls | log | diff | admit | stop]`.
pub(crate) async fn run(data_dir: Option<&Path>, isolated: bool, args: ShareArgs) -> Result<()> {
    match args.command {
        None => {
            let dir = args.dir.expect("clap requires DIR without a subcommand");
            start(data_dir, isolated, &dir, None, args.json, &args.discovery).await
        }
        Some(ShareCommand::Ls {
            ticket: None, json, ..
        }) => list(data_dir, json).await,
        Some(ShareCommand::Ls {
            ticket: Some(ticket),
            version,
            json,
        }) => files(data_dir, isolated, &ticket, version, json).await,
        Some(ShareCommand::Log { ticket, json }) => {
            history(data_dir, isolated, &ticket, json).await
        }
        Some(ShareCommand::Diff {
            ticket,
            from,
            to,
            json,
        }) => diff(data_dir, isolated, &ticket, from, to, json).await,
        Some(ShareCommand::Admit { ticket, node_id }) => {
            let share = parse(&ticket)?;
            let writer: NodeId = node_id.parse()?;
            let id = super::control(data_dir)
                .await?
                .writer(share.log, writer, true)
                .await?;
            println!("{id}");
            eprintln!(
                "{} may now publish to the share; it runs `pairs sync TICKET DIR` to do so",
                writer.short()
            );
            Ok(())
        }
        Some(ShareCommand::Stop { target }) => stop(data_dir, &target).await,
    }
}

/// `pairs sync TICKET DIR`.
pub(crate) async fn sync(data_dir: Option<&Path>, isolated: bool, args: SyncArgs) -> Result<()> {
    parse(&args.ticket)?;
    let quota = Quota {
        max_bytes: args.max_size.map(|size| size.as_u64()),
        max_files: args.max_files,
    };
    start(
        data_dir,
        isolated,
        &args.dir,
        Some((&args.ticket, quota)),
        args.json,
        &args.discovery,
    )
    .await
}

async fn start(
    data_dir: Option<&Path>,
    isolated: bool,
    dir: &Path,
    follow_share: Option<(&str, Quota)>,
    json: bool,
    discovery: &DiscoveryArgs,
) -> Result<()> {
    let ticket = follow_share.map(|(ticket, _)| ticket);
    let quota = follow_share.map(|(_, quota)| quota).unwrap_or_default();
    if ticket.is_none() && !dir.is_dir() {
        bail!(
            "{} is not a directory: name a folder to share",
            dir.display()
        );
    }
    let home = pairs::home::data_dir(data_dir)?;
    if let Some(mut client) = Client::connect(&home).await? {
        let (_, ticket) = client.share_start(dir, ticket, quota).await?;
        print_ticket(&ticket, dir, json);
        eprintln!(
            "the running node keeps {} in step from now on (stop: pairs share stop {})",
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    let node = folder_node(data_dir, isolated, discovery).await?;
    let shares = node.shares();
    let handle = match ticket {
        None => shares.create(dir).await?,
        Some(ticket) => shares.sync_with(&parse(ticket)?, dir, quota).await?,
    };
    print_ticket(&handle.ticket().to_ticket(), dir, json);
    if ticket.is_none() {
        eprintln!(
            "sharing {}: elsewhere run  pairs sync TICKET DIR   (Ctrl-C stops; `pairs node` keeps it shared)",
            dir.display()
        );
    }
    follow(&handle).await;
    // A folder shared for this run only: a later `pairs node` does not pick it up.
    shares.stop(handle.id());
    node.shutdown().await;
    Ok(())
}

/// Shows what the folder is doing until Ctrl-C.
async fn follow(handle: &ShareHandle) {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(200));
    let showing = async {
        loop {
            let s = handle.status();
            spinner.set_message(describe(&s, handle.log().peers().len()));
            let _ = handle.wait_for(Duration::from_millis(500), |_| false).await;
        }
    };
    tokio::select! {
        _ = stop_requested() => {}
        _ = showing => {}
    }
    spinner.finish_and_clear();
    let s = handle.status();
    eprintln!("{}", describe(&s, handle.log().peers().len()));
}

fn describe(s: &FolderStatus, peers: usize) -> String {
    let state = if let Some(e) = &s.error {
        format!("error: {e}")
    } else if s.in_step {
        "in step".to_string()
    } else if s.pending > 0 {
        format!("{} to fetch", s.pending)
    } else {
        "catching up".to_string()
    };
    let mut line = format!(
        "{} files, {}, {peers} peer{}, {state}; {} fetched, {} published",
        s.files,
        HumanBytes(s.bytes),
        if peers == 1 { "" } else { "s" },
        HumanBytes(s.fetched),
        s.published
    );
    if !s.writable {
        line.push_str(" (read-only: not a writer)");
    }
    if !s.kept_local.is_empty() {
        line.push_str(&format!(
            "; {} local change{} kept, not published",
            s.kept_local.len(),
            if s.kept_local.len() == 1 { "" } else { "s" }
        ));
    }
    if !s.rejected.is_empty() {
        line.push_str(&format!("; {} path(s) refused", s.rejected.len()));
    }
    if s.held_back > 0 {
        line.push_str(&format!(
            "; {} held back by the quota ({}: sync again with a larger --max-size/--max-files)",
            s.held_back,
            s.quota.describe()
        ));
    }
    line
}

fn print_ticket(ticket: &str, dir: &Path, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "ticket": ticket, "dir": std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()) })
        );
    } else {
        println!("{ticket}");
    }
}

async fn list(data_dir: Option<&Path>, json: bool) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let Some(mut client) = Client::connect(&home).await? else {
        if !json {
            eprintln!(
                "no node runs here: `pairs node` keeps shared folders in step (then `pairs share DIR` or `pairs sync TICKET DIR`)"
            );
        }
        return Ok(());
    };
    let rows = client.share_list().await?;
    if rows.is_empty() && !json {
        eprintln!("no folder is kept in step: pairs share DIR, or pairs sync TICKET DIR");
    }
    for row in rows {
        if json {
            println!(
                "{}",
                serde_json::json!({ "log": row.log, "ticket": row.ticket, "status": row.status })
            );
        } else {
            println!("{}  {}", row.status.dir.display(), row.ticket);
            println!("    {}", describe(&row.status, 0).replace(", 0 peers", ""));
        }
    }
    Ok(())
}

/// Runs `f` with the running node, or with an embedded one (online, to catch up with the share).
async fn with_node<T>(
    data_dir: Option<&Path>,
    isolated: bool,
    through_node: impl AsyncFnOnce(&mut Client) -> Result<T>,
    embedded: impl AsyncFnOnce(&Node) -> Result<T>,
) -> Result<T> {
    let home = pairs::home::data_dir(data_dir)?;
    if let Some(mut client) = Client::connect(&home).await? {
        return through_node(&mut client).await;
    }
    let node = Node::builder()
        .isolated(isolated)
        .data_dir(home)
        .fresh_key()
        .spawn()
        .await?;
    let result = tokio::select! {
        result = embedded(&node) => result,
        _ = stop_requested() => Err(anyhow::anyhow!("stopped")),
    };
    node.shutdown().await;
    result
}

async fn files(
    data_dir: Option<&Path>,
    isolated: bool,
    ticket: &str,
    version: Option<usize>,
    json: bool,
) -> Result<()> {
    let share = parse(ticket)?;
    let listing = with_node(
        data_dir,
        isolated,
        async |client| client.share_files(ticket, version).await,
        async |node| Ok(ShareFiles::of(&node.shares().tree(&share, version).await?)),
    )
    .await?;
    for file in &listing.files {
        if json {
            println!("{}", serde_json::to_string(file)?);
        } else if let Some(target) = &file.link {
            println!("{:>10}  {} -> {target}", "link", file.path);
        } else {
            let conflict = if file.conflict {
                "  (conflict copy)"
            } else {
                ""
            };
            println!(
                "{:>10}  {}{}{conflict}",
                HumanBytes(file.size).to_string(),
                file.path,
                if file.executable { "*" } else { "" }
            );
        }
    }
    if !json {
        let total = listing
            .files
            .iter()
            .fold(0u64, |total, f| total.saturating_add(f.size));
        eprintln!(
            "{} files, {} (version {})",
            listing.files.len(),
            HumanBytes(total),
            listing.version
        );
    }
    Ok(())
}

async fn history(data_dir: Option<&Path>, isolated: bool, ticket: &str, json: bool) -> Result<()> {
    let share = parse(ticket)?;
    let versions = with_node(
        data_dir,
        isolated,
        async |client| client.share_history(ticket).await,
        async |node| node.shares().history(&share).await,
    )
    .await?;
    for v in versions {
        if json {
            println!("{}", serde_json::to_string(&v)?);
        } else {
            let when = format_time(v.timestamp);
            let more = v.written + v.deleted - v.paths.len().min(v.written + v.deleted);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            println!(
                "{:>5}  {when}  {}  +{} -{}  {}{more}",
                v.version,
                v.author.short(),
                v.written,
                v.deleted,
                v.paths.join(", ")
            );
        }
    }
    Ok(())
}

async fn diff(
    data_dir: Option<&Path>,
    isolated: bool,
    ticket: &str,
    from: usize,
    to: Option<usize>,
    json: bool,
) -> Result<()> {
    let share = parse(ticket)?;
    let diff = with_node(
        data_dir,
        isolated,
        async |client| client.share_diff(ticket, from, to).await,
        async |node| node.shares().diff(&share, from, to).await,
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string(&diff)?);
        return Ok(());
    }
    for path in &diff.added {
        println!("+ {path}");
    }
    for path in &diff.changed {
        println!("~ {path}");
    }
    for path in &diff.removed {
        println!("- {path}");
    }
    if diff.is_empty() {
        eprintln!("no difference");
    }
    Ok(())
}

async fn stop(data_dir: Option<&Path>, target: &str) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let Some(mut client) = Client::connect(&home).await? else {
        bail!(
            "no node runs here: a folder is only kept in step by a running `pairs node` (or a `pairs share`/`pairs sync` in the foreground: stop it with Ctrl-C)"
        );
    };
    let log = match ShareTicket::parse(target) {
        Ok(ticket) => ticket.log,
        Err(_) => {
            let dir = std::path::absolute(PathBuf::from(target))?;
            let dir = dir.canonicalize().unwrap_or(dir);
            client
                .share_list()
                .await?
                .into_iter()
                .find(|row| row.status.dir == dir)
                .map(|row| row.log)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{target} is neither a share ticket nor a folder kept in step here (see pairs share ls)"
                    )
                })?
        }
    };
    client.share_stop(log).await?;
    eprintln!("stopped; the folder and the share stay");
    Ok(())
}

/// `pairs get SHARE-TICKET [PATH...]`: fetches once, only what is asked.
pub(crate) async fn get(
    data_dir: Option<&Path>,
    isolated: bool,
    share: ShareTicket,
    args: GetArgs,
) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        super::blobs::bar(None)
    };
    let started = Instant::now();
    let home = pairs::home::data_dir(data_dir)?;
    let done = if let Some(mut client) = Client::connect(&home).await? {
        client
            .share_get(&args.ticket, &args.paths, args.version, &out, |p| {
                super::blobs::update(&bar, p)
            })
            .await?
    } else {
        let node = super::swarm_node(data_dir, isolated, &args.discovery).await?;
        let progress = |p: &GetProgress| super::blobs::update(&bar, p);
        let shares = node.shares();
        let result = tokio::select! {
            result = shares.get(&share, &args.paths, &out, args.version, progress) => result,
            _ = stop_requested() => Err(anyhow::anyhow!("stopped: run the same command again to resume")),
        };
        node.shutdown().await;
        result?
    };
    bar.finish_and_clear();
    super::blobs::summary(&done, &out, started.elapsed().as_secs_f64(), args.json);
    Ok(())
}

fn format_time(millis: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_seconds(at).to_string()
}
