//! `label_replace` and `label_join`.

use promql_parser::parser::Expr;

use crate::aggregate::valid_label_name;
use crate::eval::Evaluator;
use crate::value::{Error, VectorElement};

pub(super) fn label_replace(ev: &Evaluator<'_, '_>, args: &[&Expr], t: i64) -> Result<Vec<VectorElement>, Error> {
    let [v, dst, replacement, src, regex] = args else {
        return Err(Error::BadData("label_replace needs 5 arguments".into()));
    };
    let (dst, replacement, src, pattern) = (
        ev.string(dst, t)?,
        ev.string(replacement, t)?,
        ev.string(src, t)?,
        ev.string(regex, t)?,
    );
    let re =
        ev.q.anchored_regex(&pattern)
            .map_err(|e| Error::Execution(format!("invalid regular expression in label_replace(): {e}")))?;
    if !valid_label_name(&dst) {
        return Err(Error::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let out: Vec<VectorElement> = ev
        .vector(v, t)?
        .into_iter()
        .map(|mut el| {
            let value = el.labels.get(&src).cloned().unwrap_or_default();
            if let Some(caps) = re.captures(&value) {
                let mut result = String::new();
                caps.expand(&replacement, &mut result);
                el.labels.remove(&dst);
                if !result.is_empty() {
                    el.labels.insert(dst.clone(), result);
                }
            }
            el
        })
        .collect();
    Ok(out)
}

pub(super) fn label_join(ev: &Evaluator<'_, '_>, args: &[&Expr], t: i64) -> Result<Vec<VectorElement>, Error> {
    let [v, dst, separator, sources @ ..] = args else {
        return Err(Error::BadData("label_join needs at least 3 arguments".into()));
    };
    let (dst, separator) = (ev.string(dst, t)?, ev.string(separator, t)?);
    if !valid_label_name(&dst) {
        return Err(Error::Execution(format!(
            "invalid destination label name in label_join(): {dst}"
        )));
    }
    let sources: Vec<String> = sources.iter().map(|s| ev.string(s, t)).collect::<Result<_, _>>()?;
    Ok(ev
        .vector(v, t)?
        .into_iter()
        .map(|mut el| {
            let joined = sources
                .iter()
                .map(|s| el.labels.get(s).cloned().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(&separator);
            el.labels.remove(&dst);
            if !joined.is_empty() {
                el.labels.insert(dst.clone(), joined);
            }
            el
        })
        .collect())
}
