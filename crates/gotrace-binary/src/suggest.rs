//! "Did you mean" suggestions for a function name that is not in the binary.

/// Up to `max` names closest to `wanted`: names containing it first, then by edit distance.
pub fn closest<'a>(wanted: &str, names: impl Iterator<Item = &'a str>, max: usize) -> Vec<String> {
    let wanted_lower = wanted.to_lowercase();
    let short = wanted_lower
        .rsplit('.')
        .next()
        .unwrap_or(&wanted_lower)
        .to_owned();
    let mut scored: Vec<(usize, &str)> = names
        .filter_map(|name| {
            let lower = name.to_lowercase();
            let distance = if lower.contains(&wanted_lower) || lower.ends_with(&format!(".{short}"))
            {
                0
            } else {
                levenshtein(&wanted_lower, &lower)
            };
            (distance <= wanted.len().max(4) / 3 + 1).then_some((distance, name))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(max)
        .map(|(_, n)| n.to_owned())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_names_by_case_and_typo() {
        let names = [
            "main.Fibonacci",
            "main.main",
            "fmt.Println",
            "main.fibHelper",
        ];
        assert_eq!(
            closest("main.fibonacci", names.into_iter(), 3),
            vec!["main.Fibonacci"]
        );
        assert_eq!(
            closest("main.Fibonaci", names.into_iter(), 3),
            vec!["main.Fibonacci"]
        );
        assert_eq!(
            closest("Fibonacci", names.into_iter(), 3),
            vec!["main.Fibonacci"]
        );
        assert!(closest("zzzzzzzzzz", names.into_iter(), 3).is_empty());
    }
}
