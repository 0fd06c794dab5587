"""Which images of a training split a quick run trains on (train_images):
a stratified sample, each class keeping its share, chosen with the run's
seed, so that every resume and rerun of the run trains the same images.
Plain numpy, for the arrays (loaders.py) and the records (TFRecordsReader.py)."""
import numpy as np

# Mixed into the run's seed, so that the subset is drawn from a stream of its
# own, not from the one that orders the training passes.
SUBSET_STREAM = 0x5AB5E7


def class_shares(class_counts, total):
    """Images per class for a sample of `total`: each class's share of
    total, rounded down, the images left over going to the largest
    remainders (the lower class on a tie), so that the counts add up to
    total exactly and none exceeds its class."""
    counts = np.asarray(class_counts, np.int64)
    exact = counts * total / counts.sum()
    shares = np.floor(exact).astype(np.int64)
    left = total - int(shares.sum())
    by_remainder = np.argsort(-(exact - shares), kind='stable')
    shares[by_remainder[:left]] += 1
    return shares


def stratified_sample(labels, total, seed):
    """The sorted positions of `total` of `labels` (a class per image), each
    class's share drawn at random (seeded by `seed`) among its images."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    chosen = [rng.choice(np.flatnonzero(labels == c), share, replace=False)
              for c, share in zip(classes, class_shares(counts, total))]
    return np.sort(np.concatenate(chosen))


def uniform_sample(size, total, seed):
    """The sorted positions of `total` of `size` items, drawn at random
    (seeded by `seed`): a sample whose classes keep their shares only on
    average, for records whose labels are not known beforehand."""
    rng = np.random.default_rng([seed, SUBSET_STREAM])
    return np.sort(rng.choice(size, total, replace=False))
