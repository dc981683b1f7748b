//! The 8 symmetries of a rectangle (dihedral group D4), numbered as the reference numbers them
//! (`dataset/common.py`). For an `h x w` grid A:
//!
//! | id | operation                  | out[i][j]            | out shape |
//! |----|----------------------------|----------------------|-----------|
//! | 0  | identity                   | A[i][j]              | h x w     |
//! | 1  | rotate 90 counter-clockwise| A[j][w-1-i]          | w x h     |
//! | 2  | rotate 180                 | A[h-1-i][w-1-j]      | h x w     |
//! | 3  | rotate 270                 | A[h-1-j][i]          | w x h     |
//! | 4  | flip left-right            | A[i][w-1-j]          | h x w     |
//! | 5  | flip up-down               | A[h-1-i][j]          | h x w     |
//! | 6  | transpose                  | A[j][i]              | w x h     |
//! | 7  | anti-transpose             | A[h-1-j][w-1-i]      | w x h     |

/// `INVERSE[t]` undoes transform `t`.
pub const INVERSE: [u8; 8] = [0, 3, 2, 1, 4, 5, 6, 7];

/// Output shape of transform `tid` applied to an `h x w` grid.
pub fn out_shape(tid: u8, h: usize, w: usize) -> (usize, usize) {
    if matches!(tid, 1 | 3 | 6 | 7) { (w, h) } else { (h, w) }
}

/// Applies transform `tid` to the row-major `h x w` grid; returns the new row-major grid.
pub fn transform<T: Copy>(grid: &[T], h: usize, w: usize, tid: u8) -> Vec<T> {
    assert_eq!(grid.len(), h * w, "grid of {} cells is not {h}x{w}", grid.len());
    let (oh, ow) = out_shape(tid, h, w);
    let mut out = Vec::with_capacity(oh * ow);
    for i in 0..oh {
        for j in 0..ow {
            let (r, c) = match tid {
                0 => (i, j),
                1 => (j, w - 1 - i),
                2 => (h - 1 - i, w - 1 - j),
                3 => (h - 1 - j, i),
                4 => (i, w - 1 - j),
                5 => (h - 1 - i, j),
                6 => (j, i),
                7 => (h - 1 - j, w - 1 - i),
                _ => panic!("dihedral transform id {tid} is not in 0..8"),
            };
            out.push(grid[r * w + c]);
        }
    }
    out
}

/// Undoes transform `tid` on a grid that has the transformed shape `h x w`.
pub fn inverse<T: Copy>(grid: &[T], h: usize, w: usize, tid: u8) -> Vec<T> {
    transform(grid, h, w, INVERSE[tid as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grid(h: usize, w: usize) -> Vec<u32> {
        (0..(h * w) as u32).collect()
    }

    #[test]
    fn eight_distinct_transforms() {
        let g = grid(3, 4);
        let mut seen: Vec<Vec<u32>> = (0..8).map(|t| transform(&g, 3, 4, t)).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn matches_numpy_conventions() {
        // [[0,1],[2,3]]: np.rot90 -> [[1,3],[0,2]]; fliplr -> [[1,0],[3,2]]; transpose -> [[0,2],[1,3]].
        let g = vec![0, 1, 2, 3];
        assert_eq!(transform(&g, 2, 2, 1), vec![1, 3, 0, 2]);
        assert_eq!(transform(&g, 2, 2, 4), vec![1, 0, 3, 2]);
        assert_eq!(transform(&g, 2, 2, 5), vec![2, 3, 0, 1]);
        assert_eq!(transform(&g, 2, 2, 6), vec![0, 2, 1, 3]);
        // anti-transpose = fliplr(rot90) -> [[3,1],[2,0]]
        assert_eq!(transform(&g, 2, 2, 7), vec![3, 1, 2, 0]);
    }

    #[test]
    fn closed_under_composition_with_identity_and_inverses() {
        let (h, w) = (2, 3);
        let g = grid(h, w);
        let all: Vec<Vec<u32>> = (0..8).map(|t| transform(&g, h, w, t)).collect();
        for a in 0..8u8 {
            let (ah, aw) = out_shape(a, h, w);
            for b in 0..8u8 {
                let ab = transform(&all[a as usize], ah, aw, b);
                assert!(all.contains(&ab), "{a} then {b} left the group");
            }
            // inverse really is the inverse, and it is unique
            let back = inverse(&all[a as usize], ah, aw, a);
            assert_eq!(back, g);
            let n_inv = (0..8u8).filter(|&b| transform(&all[a as usize], ah, aw, b) == g).count();
            assert_eq!(n_inv, 1);
        }
    }

    proptest! {
        #[test]
        fn inverse_roundtrip(h in 1usize..8, w in 1usize..8, tid in 0u8..8, seed in any::<u64>()) {
            let g: Vec<u64> = (0..h * w).map(|i| seed.wrapping_mul(i as u64 + 1) % 10).collect();
            let (oh, ow) = out_shape(tid, h, w);
            let t = transform(&g, h, w, tid);
            prop_assert_eq!(inverse(&t, oh, ow, tid), g);
        }
    }
}
