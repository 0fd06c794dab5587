"""Early stopping and reduce on plateau, read off a run's history rows: the
epochs since the validation loss last fell by min_delta decide both, as
Keras' EarlyStopping and ReduceLROnPlateau count them. Being functions of
the rows a checkpoint commits, they resume with the run: no counter of
their own can be lost or disagree with the history."""
import dataclasses

MONITOR = 'valid_loss'


def improved(loss, best, min_delta):
    """Whether `loss` is lower than the best so far by more than min_delta."""
    return best is None or loss < best - min_delta


def waits(rows, min_delta):
    """Per row, the epochs since the last improvement (0: it improved)."""
    best, wait, found = None, 0, []
    for row in rows:
        if improved(row[MONITOR], best, min_delta):
            best, wait = row[MONITOR], 0
        else:
            wait += 1
        found.append(wait)
    return found


def stopped_at(rows, cfg):
    """The epoch after which early stopping ended the run (its patience
    reached), or None: off, or not reached."""
    patience = cfg.get('early_stopping_patience')
    if patience is None:
        return None
    for row, wait in zip(rows, waits(rows, cfg.get('min_delta', 0.0))):
        if wait >= patience:
            return row['epoch']
    return None


def stop_line(rows, cfg):
    """'stopped early at epoch 7: the validation loss fell by no more than
    min_delta=0 for 3 epoch(s) (its last such fall at epoch 4)', or None."""
    epoch = stopped_at(rows, cfg)
    if epoch is None:
        return None
    patience = cfg['early_stopping_patience']
    return (f'stopped early at epoch {epoch}: the validation loss fell by no more than '
            f"min_delta={cfg['min_delta']:g} for {patience} epoch(s) "
            f'(its last larger fall at epoch {epoch - patience})')


@dataclasses.dataclass
class Plateau:
    """Reduce on plateau so far: the scale of the learning rate after the
    rows, and the epochs after which it was reduced."""
    scale: float = 1.0
    reduced_after: tuple = ()


def plateau(rows, cfg):
    """The Plateau the rows lead to: each time plateau_patience epochs pass
    without improvement the scale is multiplied by plateau_factor and the
    count starts again (the best so far is kept, as in Keras)."""
    patience = cfg.get('plateau_patience')
    found = Plateau()
    if patience is None:
        return found
    best, wait = None, 0
    for row in rows:
        if improved(row[MONITOR], best, cfg.get('min_delta', 0.0)):
            best, wait = row[MONITOR], 0
            continue
        wait += 1
        if wait >= patience:
            found = Plateau(found.scale * cfg['plateau_factor'], (*found.reduced_after, row['epoch']))
            wait = 0
    return found
