"""How a network is trained, read from the config once: the Optimisation
that Model.py's loss, learning-rate schedule and optimiser take as their
explicit argument. No TensorFlow here, as for the Architecture."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """Everything Model.py's training part needs to know."""
    optimizer: str = 'adam'         # 'adam' or 'momentum'
    learning_rate: float = 1e-4
    momentum: float = 0.9
    lr_schedule: str = 'exponential'  # 'exponential', 'piecewise' or 'cosine'
    decay_steps: int = 100000       # exponential: steps per decay
    decay_base: float = 0.96        # exponential: factor per decay
    lr_boundaries: tuple = ()       # piecewise: epochs after which the rate is multiplied
    lr_factor: float = 0.1          # piecewise: by this
    max_epochs: int = 10            # cosine: reaches 0 here
    max_steps: int = None           # cosine: or after this many steps, where that comes first
    weight_decay: float = 0.0       # L2 penalty of the conv kernels and FC weights
    label_smoothing: float = 0.0
    loss_scaling: bool = False      # mixed precision: dynamic loss scaling


def from_config(cfg):
    """The Optimisation that cfg describes (its 'auto' mixed_precision decided)."""
    return Optimisation(
        optimizer=cfg['optimizer'], learning_rate=cfg['learning_rate'], momentum=cfg['momentum'],
        lr_schedule=cfg['lr_schedule'], decay_steps=cfg['decay_steps'], decay_base=cfg['decay_base'],
        lr_boundaries=tuple(cfg['lr_boundaries']), lr_factor=cfg['lr_factor'],
        max_epochs=cfg['max_epochs'], max_steps=cfg['max_steps'], weight_decay=cfg['weight_decay'],
        label_smoothing=cfg['label_smoothing'], loss_scaling=bool(cfg['mixed_precision']))
