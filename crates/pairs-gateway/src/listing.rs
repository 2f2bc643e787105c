//! Directory listings: an HTML page, or JSON for `?format=json`.

use crate::route::encode_segment;
use crate::source::DirEntry;

/// Sorts entries for a listing: directories first, then by name.
pub(crate) fn sort(entries: &mut [DirEntry]) {
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
}

/// The HTML listing of the directory at URL path `title` (decoded, for display), with a link up unless
/// it is the site's root. Links are relative, so the page must be served at the directory's URL with
/// its trailing slash.
pub(crate) fn html(title: &str, entries: &[DirEntry], is_root: bool) -> String {
    let title = escape(title);
    let mut page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>Index of {title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td{{padding:0 1em 0 0}}\
         td.size{{text-align:right}}</style></head>\n\
         <body><h1>Index of {title}</h1>\n<table>\n"
    );
    if !is_root {
        page.push_str("<tr><td><a href=\"../\">../</a></td><td></td></tr>\n");
    }
    for entry in entries {
        let (slash, size) = if entry.is_dir {
            ("/", String::new())
        } else {
            ("", entry.size.to_string())
        };
        // "./" keeps a name such as "a:b" from reading as a URL scheme.
        page.push_str(&format!(
            "<tr><td><a href=\"./{href}{slash}\">{name}{slash}</a></td><td class=\"size\">{size}</td></tr>\n",
            href = escape(&encode_segment(&entry.name)),
            name = escape(&entry.name),
        ));
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

/// The JSON listing: `{"path": "/dir/", "entries": [{"name": "a.txt", "type": "file", "size": 3},
/// {"name": "sub", "type": "dir"}]}`.
pub(crate) fn json(path: &str, entries: &[DirEntry]) -> String {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .map(|entry| {
            if entry.is_dir {
                serde_json::json!({ "name": entry.name, "type": "dir" })
            } else {
                serde_json::json!({ "name": entry.name, "type": "file", "size": entry.size })
            }
        })
        .collect();
    let mut text = serde_json::json!({ "path": path, "entries": entries }).to_string();
    text.push('\n');
    text
}

/// Escapes text for HTML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_names_and_links() {
        let mut entries = vec![
            DirEntry::file("<b>&\"x\".txt", 5),
            DirEntry::dir("zdir"),
            DirEntry::file("a b", 1),
        ];
        sort(&mut entries);
        assert_eq!(entries[0].name, "zdir");
        let page = html("/d/<i>/", &entries, false);
        assert!(page.contains("Index of /d/&lt;i&gt;/"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("href=\"./%3Cb%3E%26%22x%22.txt\""));
        assert!(page.contains(">&lt;b&gt;&amp;&quot;x&quot;.txt</a>"));
        assert!(page.contains("href=\"./zdir/\">zdir/</a>"));
        assert!(page.contains("href=\"./a%20b\""));
        assert!(page.contains("href=\"../\""));
        assert!(!html("/", &entries, true).contains("../"));
    }

    #[test]
    fn json_shape() {
        let text = json("/d/", &[DirEntry::dir("s"), DirEntry::file("f", 3)]);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"path": "/d/", "entries": [
                {"name": "s", "type": "dir"},
                {"name": "f", "type": "file", "size": 3},
            ]})
        );
    }
}
