//! Summary statistics: confidence intervals of accuracies (plain and scaled evaluation, the
//! benchmarks) and the median of step times (`trm bench`, `trm report`).

/// Wilson score interval for `k` successes out of `n` (z = 1.96).
pub fn wilson95(k: f64, n: f64) -> (f64, f64) {
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let z = 1.96f64;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let center = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// The median: the middle value, or the mean of the two middle ones of an even count (None when
/// empty).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_even_and_empty() {
        use super::median;
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.069, 0.861]), Some(0.965));
        assert_eq!(median(&(1..=10).map(f64::from).collect::<Vec<_>>()), Some(5.5));
        assert_eq!(median(&[]), None);
    }
}
