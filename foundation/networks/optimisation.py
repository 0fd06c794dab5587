"""How a network is trained, read from the config once: the Optimisation
that Model.py's loss, learning-rate schedule and optimiser take as their
explicit argument. No TensorFlow here, as for the Architecture."""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """Everything Model.py's training part needs to know."""
    optimizer: str = 'adam'         # 'adam', 'adamw', 'momentum' or 'nesterov'
    learning_rate: float = 1e-4
    momentum: float = 0.9
    lr_schedule: str = 'exponential'  # 'exponential', 'piecewise' or 'cosine'
    decay_steps: int = 100000       # exponential: steps per decay
    decay_base: float = 0.96        # exponential: factor per decay
    lr_boundaries: tuple = ()       # piecewise: epochs after which the rate is multiplied
    lr_factor: float = 0.1          # piecewise: by this
    max_epochs: int = 10            # cosine: reaches 0 here
    max_steps: int = None           # cosine: or after this many steps, where that comes first
    warmup_epochs: float = 0.0      # linear warmup in front of the schedule
    plateau: bool = False           # the rate scaled by a variable that reduce on plateau sets
    weight_decay: float = 0.0       # L2 penalty of the conv kernels and FC weights (adamw: decoupled)
    label_smoothing: float = 0.0
    clip_grad_norm: float = None    # gradients scaled to at most this global norm
    ema_decay: float = None         # a moving average of the weights, evaluated instead of them
    mixup_alpha: float = None       # batch mixing: Beta(alpha, alpha) draws of the mix
    cutmix_alpha: float = None
    mixing_seed: int = 0            # seeds the batch mixing's draws, with the step
    loss_scaling: bool = False      # float16 on a GPU: dynamic loss scaling

    @property
    def decoupled_decay(self):
        """AdamW's weight decay, applied to the weights themselves, not via the loss."""
        return self.weight_decay if self.optimizer == 'adamw' else 0.0

    @property
    def loss_penalty(self):
        """The L2 penalty's coefficient in the loss (every optimiser but adamw)."""
        return 0.0 if self.optimizer == 'adamw' else self.weight_decay


def from_config(cfg, on_gpu=False):
    """The Optimisation that cfg describes (its 'auto' mixed_precision decided),
    `on_gpu` or on the CPU. Mixed precision scales the loss on a GPU only:
    float16 gradients underflow without it, while bfloat16 (the CPU's) has
    float32's range, so a scale would only add a check per gradient."""
    return Optimisation(
        optimizer=cfg['optimizer'], learning_rate=cfg['learning_rate'], momentum=cfg['momentum'],
        lr_schedule=cfg['lr_schedule'], decay_steps=cfg['decay_steps'], decay_base=cfg['decay_base'],
        lr_boundaries=tuple(cfg['lr_boundaries']), lr_factor=cfg['lr_factor'],
        max_epochs=cfg['max_epochs'], max_steps=cfg['max_steps'], warmup_epochs=cfg['warmup_epochs'],
        plateau=cfg['plateau_patience'] is not None,
        weight_decay=cfg['weight_decay'], label_smoothing=cfg['label_smoothing'],
        clip_grad_norm=cfg['clip_grad_norm'], ema_decay=cfg['ema_decay'], mixup_alpha=cfg['mixup_alpha'],
        cutmix_alpha=cfg['cutmix_alpha'], mixing_seed=cfg['seed'], loss_scaling=bool(cfg['mixed_precision']) and on_gpu)
