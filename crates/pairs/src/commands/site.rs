//! `pairs site publish DIR`: a friendly name for sharing a folder with an `index.html` and opening
//! it at its own origin on the node's HTTP gateway. Through the running node when there is one (it
//! keeps serving the site), else with a node of its own until stopped.

use anyhow::Result;

use crate::cli::SiteCommand;

pub(crate) async fn run(
    data_dir: Option<&std::path::Path>,
    isolated: bool,
    command: SiteCommand,
) -> Result<()> {
    match command {
        #[cfg(feature = "gateway")]
        SiteCommand::Publish(args) => published::publish(data_dir, isolated, args).await,
        #[cfg(not(feature = "gateway"))]
        SiteCommand::Publish(_) => {
            let _ = (data_dir, isolated);
            anyhow::bail!("this build of pairs has no HTTP gateway (the `gateway` feature is off)")
        }
    }
}

#[cfg(feature = "gateway")]
mod published {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};

    use anyhow::{Context as _, Result, bail};
    use pairs::Node;
    use pairs::base::Ticket as _;
    use pairs::control::Client;
    use pairs::gateway::{share_origin_url, share_url};
    use pairs::log::LogId;

    use crate::cli::SitePublishArgs;
    use crate::commands::stop_requested;

    /// The site's folder, absolute, checked to hold an `index.html`.
    fn site_dir(dir: &Path) -> Result<PathBuf> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot read {}", dir.display()))?;
        if !dir.is_dir() {
            bail!(
                "{} is not a directory: name the site's folder",
                dir.display()
            );
        }
        if !dir.join("index.html").is_file() {
            bail!(
                "{} has no index.html: a site is a folder with its front page in index.html (`pairs share DIR` shares any folder)",
                dir.display()
            );
        }
        Ok(dir)
    }

    pub(super) async fn publish(
        data_dir: Option<&Path>,
        isolated: bool,
        args: SitePublishArgs,
    ) -> Result<()> {
        let dir = site_dir(&args.dir)?;
        let home = pairs::home::data_dir(data_dir)?;
        if let Some(mut client) = Client::connect(&home).await? {
            if args.gateway_port.is_some() {
                bail!(
                    "a node runs on {}: its gateway's port is set where it starts (`[gateway] port = N` in config.toml), not here",
                    home.display()
                );
            }
            // Publishing a folder twice is the same site, at the same URL.
            let shared = client
                .share_list()
                .await?
                .into_iter()
                .find(|row| row.status.dir == dir);
            let (log, ticket) = match shared {
                Some(row) => (row.log, row.ticket),
                None => client.share_start(&dir, None, Default::default()).await?,
            };
            let Some(gateway) = client.status().await?.gateway else {
                println!("{ticket}");
                bail!(
                    "the folder is shared, but the running node serves no HTTP gateway (`[gateway] enabled = false` in config.toml?)"
                );
            };
            print_site(log, &ticket, gateway, &dir, args.json);
            eprintln!(
                "the running node serves the site from now on (stop: pairs share stop {})",
                dir.display()
            );
            return Ok(());
        }
        let discovery = &args.discovery;
        let mut builder = Node::builder()
            .isolated(isolated)
            .sources(discovery.sources.options())
            .bind(discovery.bind.bind)
            .port(discovery.bind.port)
            .relay_circuits(if discovery.no_relay {
                0
            } else {
                pairs::node::DEFAULT_RELAY_CIRCUITS
            });
        if let Some(dir) = data_dir {
            builder = builder.data_dir(dir);
        }
        builder = match args.gateway_port {
            Some(port) => builder.gateway(Some(port)),
            None => builder.gateway_by_default(),
        };
        let node = builder.spawn().await?;
        let shares = node.shares();
        let handle = shares.create(&dir).await?;
        let gateway = node.gateway_addr().context(
            "the node serves no HTTP gateway (`[gateway] enabled = false` in config.toml?)",
        )?;
        print_site(
            handle.id(),
            &handle.ticket().to_ticket(),
            gateway,
            &dir,
            args.json,
        );
        eprintln!("serving the site until Ctrl-C (`pairs node` keeps sites up)");
        stop_requested().await;
        // A site published for this run only: a later `pairs node` does not pick it up.
        shares.stop(handle.id());
        node.shutdown().await;
        Ok(())
    }

    fn print_site(log: LogId, ticket: &str, gateway: SocketAddr, dir: &Path, json: bool) {
        let url = share_origin_url(log, gateway);
        if json {
            println!(
                "{}",
                serde_json::json!({ "url": url, "ticket": ticket, "dir": dir })
            );
            return;
        }
        println!("{url}");
        println!("{ticket}");
        eprintln!(
            "open {url} in a browser on this machine; on another, its node's gateway serves the ticket \
             at {}",
            share_url("TICKET", gateway.port())
        );
    }
}
