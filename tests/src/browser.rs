//! A real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the UI tests: pages, clicks, screenshots, and the browser's own
//! console log, read to prove no page raised a JavaScript error.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// chromedriver plus one browser session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

/// chromedriver's `POST /session/{id}/se/log`: the browser console entries since the last
/// call (needs the `goog:loggingPrefs` capability).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where screenshots go: `target/ui-screenshots/`, for a reviewer to look at.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-screenshots")
}

impl Browser {
    pub async fn start() -> Result<Browser> {
        let port = free_port()?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        crate::eventually(Duration::from_secs(30), "chromedriver ready", || {
            let (http, url) = (http.clone(), format!("{base}/status"));
            async move {
                Ok(match http.get(&url).send().await {
                    Ok(r) => r.json::<Value>().await.ok().filter(|v| v["value"]["ready"] == true),
                    Err(_) => None,
                })
            }
        })
        .await?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1800", "--lang=en-US"],
            }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&base)
            .await
            .map_err(|e| anyhow!("WebDriver session: {e}"))?;
        let shots = screenshot_dir();
        std::fs::create_dir_all(&shots)?;
        Ok(Browser { client, driver, shots })
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.map_err(|e| anyhow!("goto {url}: {e}"))
    }

    pub async fn find(&self, css: &str) -> Result<Element> {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(e) => Ok(e),
            Err(e) => Err(anyhow!("no element {css:?} on {}: {e}", self.url().await)),
        }
    }

    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_err(|e| anyhow!("find_all {css:?}: {e}"))
    }

    /// Clicks something that loads a new page (a link, a form's button) and returns once the
    /// old page is gone, so the next `find` sees the new page and not a stale copy of an
    /// element both pages have (a notice, a table row).
    pub async fn click_and_load(&self, element: Element) -> Result<()> {
        let old_root = self
            .client
            .find(Locator::Css("html"))
            .await
            .map_err(|e| anyhow!("the page's root: {e}"))?;
        element.click().await.map_err(|e| anyhow!("click: {e}"))?;
        crate::eventually(Duration::from_secs(20), "the next page to load", || {
            let old_root = old_root.clone();
            async move {
                match old_root.tag_name().await {
                    Err(e) if e.is_stale_element_reference() => Ok(Some(())),
                    Err(e) => Err(anyhow!("{e}")),
                    Ok(_) => Ok(None),
                }
            }
        })
        .await
    }

    /// Finds `css` and clicks it; see [`Browser::click_and_load`].
    pub async fn click_css_and_load(&self, css: &str) -> Result<()> {
        let element = self.find(css).await?;
        self.click_and_load(element).await
    }

    pub async fn text(&self, css: &str) -> Result<String> {
        self.find(css)
            .await?
            .text()
            .await
            .map_err(|e| anyhow!("text of {css:?}: {e}"))
    }

    pub async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    pub async fn js(&self, script: &str) -> Result<Value> {
        self.client
            .execute(script, vec![])
            .await
            .map_err(|e| anyhow!("script {script:?}: {e}"))
    }

    /// Saves a PNG of the viewport as `target/ui-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await.map_err(|e| anyhow!("screenshot: {e}"))?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Console entries at level SEVERE since the last call: uncaught exceptions, failed
    /// script or asset loads.
    pub async fn js_errors(&self) -> Result<Vec<String>> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .map_err(|e| anyhow!("reading the browser log: {e}"))?;
        Ok(log
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// Fails when the page logged a JavaScript error.
    pub async fn assert_no_js_errors(&self, page: &str) -> Result<()> {
        let errors = self.js_errors().await?;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("{page} logged JavaScript errors: {errors:#?}"))
        }
    }

    pub async fn close(mut self) -> Result<()> {
        let client = self.client.clone();
        let closed = client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        closed.map_err(|e| anyhow!("closing the browser: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
