//! The web pages (`web/`), built into the hosts that serve them from their own binary (the edge
//! node, the Spin app; the Worker serves the same files as static assets): which files there
//! are, their types, and how each is served.

use liveshop_room::pages::Page;

/// A file of `web/`.
#[derive(Debug, Clone, Copy)]
pub struct WebFile {
    pub body: &'static str,
    pub content_type: &'static str,
    /// A page's HTML: served as `/watch/{show}` and the like with the page's policy, and at
    /// `/web/{file}` only inert (`liveshop_room::pages::RAW_PAGE_POLICY`).
    pub html: bool,
}

/// The file `name` of `/web/{name}`, if there is one.
pub fn file(name: &str) -> Option<WebFile> {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    let (body, content_type) = match name {
        "viewer.html" => (include_str!("../../../web/viewer.html"), HTML),
        "dashboard.html" => (include_str!("../../../web/dashboard.html"), HTML),
        "report.html" => (include_str!("../../../web/report.html"), HTML),
        "viewer.js" => (include_str!("../../../web/viewer.js"), JS),
        "dashboard.js" => (include_str!("../../../web/dashboard.js"), JS),
        "client.js" => (include_str!("../../../web/client.js"), JS),
        "shop.js" => (include_str!("../../../web/shop.js"), JS),
        "sync.js" => (include_str!("../../../web/sync.js"), JS),
        "deals.js" => (include_str!("../../../web/deals.js"), JS),
        "report.js" => (include_str!("../../../web/report.js"), JS),
        "charts.js" => (include_str!("../../../web/charts.js"), JS),
        "style.css" => (include_str!("../../../web/style.css"), "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(WebFile { body, content_type, html: content_type == HTML })
}

/// The HTML file of `page`.
pub fn page(page: Page) -> WebFile {
    let name = match page {
        Page::Viewer => "viewer.html",
        Page::Dashboard => "dashboard.html",
        Page::Report => "report.html",
    };
    file(name).expect("every page has its file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_and_their_scripts_are_built_in_and_nothing_else_is() {
        let viewer = page(Page::Viewer);
        assert!(viewer.html && viewer.body.contains("/web/viewer.js"));
        assert_eq!(
            file("client.js").map(|f| (f.content_type, f.html)),
            Some(("text/javascript; charset=utf-8", false))
        );
        for other in ["player.js", "package.json", "../Cargo.toml", ""] {
            assert!(file(other).is_none(), "{other}");
        }
    }
}
