"""What shapes a network, read from the config once: the Architecture that
Model.py's network functions take as their explicit argument, and the stage
table of ResNet50, which the config checks use too. No TensorFlow here: a
config is checked before TensorFlow loads."""
import dataclasses

# ResNet50's stages conv2_x .. conv5_x: (stage, bottleneck width m, blocks);
# a block outputs EXPANSION * m channels.
RESNET50_STAGES = ((2, 64, 3), (3, 128, 4), (4, 256, 6), (5, 512, 3))
EXPANSION = 4
STEM_CHANNELS = 64  # ResNet50's 7x7 conv, before the stages
CUSTOM_FILTERS = (16, 32, 64)  # the custom model's three 5x5 convs


@dataclasses.dataclass(frozen=True)
class SqueezeExcite:
    """The SE blocks of a network (SE paper): reduction ratio r, squeeze
    ('avg' or 'max' pooling), excitation gate ('sigmoid', 'tanh', 'relu');
    for ResNet50 also where a block sits (its Fig. 5: 'standard', 'pre',
    'post', 'identity') and in which stages (2-5)."""
    ratio: int = 16
    squeeze: str = 'avg'
    excitation: str = 'sigmoid'
    integration: str = 'standard'
    stages: tuple = (2, 3, 4, 5)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything the network functions of Model.py need to know."""
    model: str                    # 'custom_model' or 'resnet50'
    num_classes: int
    activation: object            # the function, e.g. layers.relu
    activation_name: str = 'relu'  # 'selu' also means LeCun-normal weights and alpha dropout
    data_format: str = 'NHWC'
    se: SqueezeExcite = None      # None: no SE blocks
    dropout: float = 0.0          # of the hidden FC layers, while training
    head: tuple = (256, 128)      # hidden FC units before the classes
    pool_size: tuple = (2, 2)     # the custom model's max pools
    pool_strides: int = 2
    selu_residual_scale: float = 1.0  # ResNet50 under SELU: AF(s * (residual + shortcut))

    @property
    def selu(self):
        return self.activation_name == 'selu'


def head_units(model, dataset_name):
    """Hidden FC layers of the head (docs/models.md): FC 256, 128 for the custom
    model; FC 512, 256 for ResNet50, FC 512 alone on ImageNet."""
    if model == 'custom_model':
        return (256, 128)
    return (512,) if dataset_name == 'imagenet' else (512, 256)


def squeeze_excite_of(cfg):
    """The config's SE blocks, or None without use_se."""
    if not cfg['use_se']:
        return None
    return SqueezeExcite(cfg['se_r'], cfg['se_squeeze'], cfg['se_excitation'],
                         cfg['se_integration'], tuple(cfg['se_stages']))


def from_config(cfg):
    """The Architecture that cfg describes (its 'auto' data_format decided)."""
    selu = cfg['activation_fn'] == 'selu'
    return Architecture(
        model=cfg['model'], num_classes=cfg['output_shape'],
        activation=cfg['activation_functions'][cfg['activation_fn']],
        activation_name=cfg['activation_fn'],
        data_format=cfg['data_format'], se=squeeze_excite_of(cfg), dropout=cfg['dropout'],
        head=head_units(cfg['model'], cfg['dataset_name']), pool_size=tuple(cfg['pool_size']),
        pool_strides=cfg['strides'],
        selu_residual_scale=cfg['selu_residual_scale'] if selu else 1.0)


def se_block_channels(model, se):
    """The channels that each SE block of the network sees, in network order."""
    if se is None:
        return []
    if model == 'custom_model':
        return [CUSTOM_FILTERS[-1]]
    channels, block_inputs = [], STEM_CHANNELS
    for stage, width, blocks in RESNET50_STAGES:
        for _ in range(blocks):
            if stage in se.stages:  # 'pre' sees the block's input, the others its output
                channels.append(block_inputs if se.integration == 'pre' else EXPANSION * width)
            block_inputs = EXPANSION * width
    return channels
