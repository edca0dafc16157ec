//! The security headers of the web pages (`web/`) and of everything else a host serves, written
//! once for every host (the edge node sets them in one middleware, the Worker in its router).
//!
//! The pages load only their own scripts and styles (no inline script, no `style=` markup, no
//! `eval`), so the policy needs no `'unsafe-*'` source: an injected `<script>` or `onclick=`
//! does not run. Video plays from `blob:` URLs (Media Source Extensions; hls.js also starts its
//! worker from one); product pictures may be on any HTTPS host or `data:` URLs; WebSockets and
//! server-sent events go to the page's own origin (`'self'` covers `ws:`/`wss:` of it).

use crate::show::Show;

/// Headers for every response a host gives, pages, scripts and JSON alike: the browser takes
/// the declared type and never guesses one (a JSON answer never runs as a script or a page);
/// and no `Referer` leaves a page. Nothing here needs one, and the pages load product pictures
/// from merchants' hosts and link to their product pages: `no-referrer` tells those hosts
/// nothing about which show or dashboard (path included) the viewer had open.
pub const COMMON_HEADERS: [(&str, &str); 2] =
    [("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer")];

/// The policy of a page's HTML file fetched as a plain asset (`/web/viewer.html`), not as the
/// page it is: nothing runs and nobody frames it, so the show's policy cannot be sidestepped.
/// (`functions/cloudflare/build.sh` writes the same into the Worker's `_headers`.)
pub const RAW_PAGE_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// The pages a host serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `/watch/{show}`: frameable by the show's `embed_origins` only.
    Viewer,
    /// `/dashboard/{show}`: never framed (a framed dashboard invites clickjacking of host
    /// actions).
    Dashboard,
    /// `/shows/{show}/report`: never framed either (it shows the show's sales).
    Report,
}

/// What every page may load and where it may connect.
const BASE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' https: data:; media-src 'self' blob:; worker-src 'self' blob:; connect-src 'self'; \
base-uri 'none'; form-action 'self'; object-src 'none'";

/// The `Content-Security-Policy` of `page`; `show` is the viewer page's show when it exists
/// (its `embed_origins` may frame it; without a show nobody may).
pub fn content_security_policy(page: Page, show: Option<&Show>) -> String {
    let embedders = match (page, show) {
        (Page::Viewer, Some(show)) if !show.embed_origins.is_empty() => show.embed_origins.join(" "),
        _ => "'none'".into(),
    };
    format!("{BASE_POLICY}; frame-ancestors {embedders}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::show::NewShow;

    #[test]
    fn only_the_viewer_page_of_a_show_that_allows_it_is_framed() {
        let new = NewShow {
            id: Some("demo".into()),
            title: "Demo".into(),
            products: vec![],
            shop: None,
            embed_origins: vec!["https://shop.example".into(), "https://blog.example:8443".into()],
        };
        let show = Show::new(new, 1).unwrap();
        let viewer = content_security_policy(Page::Viewer, Some(&show));
        assert!(viewer.ends_with("; frame-ancestors https://shop.example https://blog.example:8443"));
        assert!(!viewer.contains("unsafe"));
        let dashboard = content_security_policy(Page::Dashboard, Some(&show));
        assert!(dashboard.ends_with("; frame-ancestors 'none'"));
        assert_eq!(content_security_policy(Page::Report, Some(&show)), dashboard);
        assert!(content_security_policy(Page::Viewer, None).ends_with("; frame-ancestors 'none'"));
    }
}
