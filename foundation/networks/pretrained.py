"""ResNet50's trunk started from Keras' ImageNet weights (config key
init_weights): the file `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`
that keras.applications.ResNet50 downloads, in Keras' legacy HDF5 layout (a
group per layer, `conv2_block1_1_conv/conv2_block1_1_conv/kernel:0`; root
attribute `layer_names`, each group's `weight_names`).

Keras' layers map one to one onto Model.resnet50's variables: `conv1_conv`,
`conv1_bn` -> conv1/conv, conv1/bn; `conv<s>_block<b>_<i>_conv`, `_bn` ->
stage<s>/block<b>/conv<i> (i = 1..3) or shortcut (i = 0). Keras' convs carry a
bias that the batch norm after them subtracts again; ours have none, so the
bias goes into the moving mean. The SE blocks and the head start fresh.

Only reading the file's layout needs no TensorFlow: the config check does it,
so a wrong file is one line before anything is built.
"""
import collections
import contextlib

import numpy as np

from foundation import regular_files
from foundation.errors import DataError
from foundation.networks.architecture import EXPANSION, RESNET50_STAGES, STEM_CHANNELS
from foundation.tf_quiet import OnFirstUse

v1 = OnFirstUse('compat.v1')

KERAS_FILE = 'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
BN_WEIGHTS = ('gamma', 'beta', 'moving_mean', 'moving_variance')
# Keras' files of the whole network (include_top=True) also hold the ImageNet
# classifier, which a run never takes: its head is its own.
TOP_LAYERS = {'predictions', 'probs', 'fc1000'}
# What Keras' ResNet50 weights expect at their input ('caffe' preprocessing):
# BGR pixels 0..255 less these means, unscaled.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
STEM_KERNEL, STEM_MEAN = 'conv1/conv/kernel', 'conv1/bn/moving_mean'
# Keras' ResNet50 files are 95 MB (no top) and 103 MB (whole).
WEIGHTS_MAX_BYTES = 1 << 30


def trunk_layers():
    """[(Keras layer prefix, Model.resnet50 scope, kernel shape)] of the stem
    and every bottleneck conv, each followed by a batch norm."""
    layers = [('conv1', 'conv1', (7, 7, 3, STEM_CHANNELS))]
    channels = STEM_CHANNELS
    for stage, width, blocks in RESNET50_STAGES:
        for block in range(1, blocks + 1):
            prefix, scope = f'conv{stage}_block{block}', f'stage{stage}/block{block}'
            if block == 1:
                layers.append((f'{prefix}_0', f'{scope}/shortcut',
                               (1, 1, channels, EXPANSION * width)))
            layers += [(f'{prefix}_1', f'{scope}/conv1', (1, 1, channels, width)),
                       (f'{prefix}_2', f'{scope}/conv2', (3, 3, width, width)),
                       (f'{prefix}_3', f'{scope}/conv3', (1, 1, width, EXPANSION * width))]
            channels = EXPANSION * width
    return layers


def expected_weights():
    """{(Keras layer, weight): shape} of every weight the trunk takes."""
    expected = {}
    for prefix, _, kernel in trunk_layers():
        expected[f'{prefix}_conv', 'kernel'] = kernel
        expected[f'{prefix}_conv', 'bias'] = kernel[-1:]
        for weight in BN_WEIGHTS:
            expected[f'{prefix}_bn', weight] = kernel[-1:]
    return expected


# --- reading the file ---------------------------------------------------------------

# The legacy layout names every layer and weight in root and group attributes:
# ResNet50's file lists 177 layers, at most 5 weights each. A bound well
# above, checked from an attribute's shape before it is read.
MAX_NAMES = 10000
NUMBER_KINDS = 'fiu'  # float, signed, unsigned: what a weight may be stored as
# What h5py raises for an entry it cannot follow or read (a loop of soft
# links: RuntimeError; a missing filter: OSError; a type numpy has not: TypeError).
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _weight_name(stored):
    """'conv1_conv/kernel:0' (Keras 2) or 'conv1_conv/kernel' -> 'kernel'."""
    return _text(stored).rsplit('/', 1)[-1].split(':')[0]


def refused(path, entry, why):
    """The DataError of a file whose `entry` is not what Keras writes."""
    return DataError(f"{path}: {entry} {why}; init_weights takes Keras' {KERAS_FILE}")


@contextlib.contextmanager
def entry_errors(path, entry):
    """h5py's errors while `entry` is followed or read made the DataError
    that names it (a DataError, itself a ValueError, passes as it is)."""
    try:
        yield
    except DataError:
        raise
    except H5_ERRORS as error:
        raise refused(path, entry, f'cannot be read ({error})') from None


def member(group, name, path):
    """The object at `name` ('a/b/c') inside `group`, None if there is none,
    found part by part through hard links alone: a soft or external link
    may lead out of the file, to a loop or to another file, none of which
    Keras writes."""
    import h5py
    node = group
    for part in filter(None, name.split('/')):
        if not isinstance(node, h5py.Group):
            raise refused(path, node.name, 'is no group')
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            kind = 'an external' if isinstance(link, h5py.ExternalLink) else 'a soft'
            raise refused(path, f'{node.name.rstrip("/")}/{part}', f'is {kind} link')
        node = node[part]
    return node


def names(attrs, key, path, where):
    """The names listed in attribute `key` of `attrs` ([] without it), its
    shape and type checked before it is read."""
    if key not in attrs:
        return []
    listed = attrs.get_id(key)
    if listed.shape == (0,):  # a layer without weights: Keras' empty list, stored as float64
        return []
    if len(listed.shape) != 1 or listed.shape[0] > MAX_NAMES or listed.dtype.kind not in 'OSU':
        raise refused(path, f'{where} attribute {key}', f'is {listed.dtype} of shape '
                      f'{listed.shape}, not a list of at most {MAX_NAMES} names')
    return [_text(name) for name in attrs[key]]


def weight_layers(root, path):
    """{layer: {weight: h5py dataset}} of the layers that hold weights, in
    Keras' legacy layout (a whole-model file keeps them under model_weights)."""
    import h5py
    whole_model = member(root, 'model_weights', path)
    root = root if whole_model is None else whole_model
    if not isinstance(root, h5py.Group) or 'layer_names' not in root.attrs:
        raise DataError(f"{path} is not Keras' legacy HDF5 weights file (no layer_names); "
                        f"init_weights takes {KERAS_FILE}")
    with entry_errors(path, f'{root.name} attribute layer_names'):
        listed = names(root.attrs, 'layer_names', path, root.name)
    layers = {}
    for layer in listed:
        with entry_errors(path, f'layer {layer}'):
            group = member(root, layer, path)
            if group is None:
                continue
            if not isinstance(group, h5py.Group):
                raise refused(path, group.name, 'is no group of weights')
            stored = names(group.attrs, 'weight_names', path, group.name)
            if stored:
                layers[layer] = {_weight_name(name): member(group, name, path) for name in stored}
    return layers


def check_dataset(found, entry, shape, path):
    """A DataError unless `found` is a dataset of numbers in `shape`, its
    data in this file: all from its metadata, before any of it is read."""
    import h5py
    if found is None:
        raise refused(path, entry, f'is missing where ResNet-50 has {shape}')
    with entry_errors(path, entry):
        if not isinstance(found, h5py.Dataset):
            raise refused(path, entry, 'is no dataset')
        if found.dtype.kind not in NUMBER_KINDS or found.dtype.shape:
            raise refused(path, entry, f'holds {found.dtype}, not numbers')
        if found.shape is None:  # h5py.Empty: a dataset of no shape
            raise refused(path, entry, f'is empty where ResNet-50 has {shape}')
        if tuple(found.shape) != shape:
            raise refused(path, entry, f'is {found.shape} where ResNet-50 has {shape}: the '
                          f'weights of another network')
        if found.external or found.is_virtual:
            raise refused(path, entry, 'keeps its data in other files')


def check_layers(layers, path):
    """A DataError unless `layers` are ResNet-50's, in the shapes it has."""
    expected = expected_weights()
    wanted = {layer for layer, _ in expected}
    missing = sorted(wanted - set(layers))
    if missing:
        raise DataError(f"{path} is not Keras' ResNet50: it lacks {len(missing)} of ResNet-50's "
                        f"{len(wanted)} layers ({', '.join(missing[:3])}, ...); init_weights "
                        f"takes {KERAS_FILE}")
    extra = sorted(set(layers) - wanted - TOP_LAYERS)
    if extra:
        raise DataError(f"{path} holds {len(extra)} layers ResNet-50 has not ({', '.join(extra[:3])}"
                        f"{', ...' if len(extra) > 3 else ''}): the weights of another network")
    for (layer, weight), shape in expected.items():
        check_dataset(layers[layer].get(weight), f'{layer}/{weight}', shape, path)


def read_trunk(path, values=True):
    """{variable name under the model's scope: float32 array} of ResNet50's
    trunk in Keras' file at `path`, the conv biases folded into the moving
    means; the first kernel as Keras has it (BGR). values=False only checks
    the file's layers, shapes and types (no data read) and returns None.
    Every value is read and checked before any is returned: a file that does
    not fit is refused before a variable is assigned."""
    # Imported here: h5py is slow to import, and every config check imports this
    # module, while only a config with init_weights needs it.
    import h5py
    try:  # stat alone: h5py opens no FIFO or device that would block or stream
        regular_files.regular_file(path, WEIGHTS_MAX_BYTES, "Keras' weights file")
    except regular_files.UnfitFile as error:
        raise DataError(f"{error}; init_weights takes Keras' {KERAS_FILE}") from None
    try:
        with h5py.File(path, 'r') as root:
            layers = weight_layers(root, path)
            check_layers(layers, path)
            return trunk_values(layers, path) if values else None
    except (OSError, KeyError) as error:
        raise DataError(f"{path} is not a readable HDF5 weights file ({error}); init_weights "
                        f"takes Keras' {KERAS_FILE}") from None


def weight_value(layers, layer, weight, path):
    """The float32 array of `weight` of `layer`, read once; a DataError
    unless it is finite (a NaN would stop training after its first epoch)."""
    entry = f'{layer}/{weight}'
    # A float64 beyond float32's range becomes inf, refused below.
    with entry_errors(path, entry), np.errstate(over='ignore'):
        value = np.asarray(layers[layer][weight][()], np.float32)
    if not np.isfinite(value).all():
        raise refused(path, entry, f'holds {np.count_nonzero(~np.isfinite(value))} values that '
                      f'are NaN or infinite (in float32)')
    if weight == 'moving_variance' and (value < 0).any():
        raise refused(path, entry, 'holds variances below 0')
    return value


def trunk_values(layers, path):
    """The trunk's variables from Keras' layers (h5py datasets)."""
    values = {}
    for prefix, scope, _ in trunk_layers():
        conv, bn = f'{prefix}_conv', f'{prefix}_bn'
        values[f'{scope}/conv/kernel'] = weight_value(layers, conv, 'kernel', path)
        for weight in BN_WEIGHTS:
            values[f'{scope}/bn/{weight}'] = weight_value(layers, bn, weight, path)
        # BN(conv + bias) normalises with (conv + bias - mean): our convs have no bias.
        mean = values[f'{scope}/bn/moving_mean'] - weight_value(layers, conv, 'bias', path)
        if not np.isfinite(mean).all():
            raise refused(path, f'{bn}/moving_mean', f'less {conv}/bias overflows float32')
        values[f'{scope}/bn/moving_mean'] = mean
    return values


# --- into a graph and a run ---------------------------------------------------------

def assign(session, pairs):
    """Sets each variable of [(variable, numpy value)] in one session run."""
    feeds, updates = {}, []
    for variable, value in pairs:
        placeholder = v1.placeholder(variable.dtype.base_dtype, value.shape)
        updates.append(variable.assign(placeholder))
        feeds[placeholder] = value
    session.run(updates, feeds)


def network_variables(model, kind='GLOBAL_VARIABLES'):
    """{name under the model's scope: variable} of a Model.Model's network,
    all of them or those of another GraphKeys `kind`."""
    prefix = model.variables_prefix
    variables = model.X.graph.get_collection(getattr(v1.GraphKeys, kind), prefix)
    return {v.op.name[len(prefix):]: v for v in variables}


def fit_input(values, mean, std):
    """`values` with the first conv taking this project's input: pixels
    standardised per channel, z = (x - mean) / std, RGB or gray, where Keras'
    weights take BGR pixels less CAFFE_MEAN_BGR. On one channel the kernel is
    summed over B, G and R (a gray image is one with B = G = R). The constant
    part goes into the moving mean: exact away from the borders, where the
    zero padding stands for other pixels in the two conventions."""
    kernel = values[STEM_KERNEL].astype(np.float64)  # [7, 7, 3 (BGR), 64]
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    source = (2, 1, 0) if len(mean) == 3 else (0, 0, 0)  # our channel feeding B, G, R
    fitted = np.zeros(kernel.shape[:2] + (len(mean), kernel.shape[3]))
    shift = np.zeros(kernel.shape[3])
    for bgr, channel in enumerate(source):
        fitted[:, :, channel] += kernel[:, :, bgr] * std[channel]
        shift += kernel[:, :, bgr].sum(axis=(0, 1)) * (mean[channel] - CAFFE_MEAN_BGR[bgr])
    return {**values, STEM_KERNEL: fitted.astype(np.float32),
            STEM_MEAN: (values[STEM_MEAN] - shift).astype(np.float32)}


def check_fitted(values, path):
    """`values`, unless fitting them to the input (fit_input) took the first
    kernel or its mean beyond float32: finite in the file, they would be
    infinite in the network, and training would stop 'diverged'."""
    for name, entry in ((STEM_KERNEL, 'conv1_conv/kernel'), (STEM_MEAN, 'conv1_bn/moving_mean')):
        if not np.isfinite(values[name]).all():
            raise refused(path, entry, "overflows float32 once fitted to this data's input "
                                       "(scaled by its pixels' std)")
    return values


def start_from(run):
    """A fresh run's ResNet50 trunk from cfg['init_weights'] (nothing when it
    is None), put in after the variables are initialised; folder.start_or_resume
    calls it for a fresh start only, never over a restored checkpoint."""
    path = run.cfg['init_weights']
    if not path:
        return
    model, data = run.built.model, run.built.source.data
    values = check_fitted(fit_input(read_trunk(path), data.mean, data.std), path)
    variables = network_variables(model)
    assign(run.session, [(variables[name], value) for name, value in values.items()])
    print(loaded_line(path, model, values, len(data.mean)), flush=True)


def loaded_line(path, model, values, channels):
    """What init_weights loaded and what starts fresh, in one line."""
    fresh = collections.Counter()
    loaded = 0
    for name, variable in network_variables(model, 'TRAINABLE_VARIABLES').items():
        size = int(np.prod(variable.shape.as_list()))
        if name in values:
            loaded += size
        else:
            fresh['the SE blocks' if '/se/' in name else f"the {name.split('/')[0]}"] += size
    gray = ', its first kernel summed over RGB' if channels == 1 else ''
    starts = ', '.join(f'{part} ({size:,} parameters)' for part, size in fresh.items())
    return (f"Initial weights from {path}: ResNet-50's trunk, {len(trunk_layers())} convolutions "
            f"with their batch norms ({loaded:,} parameters{gray}); starting fresh: {starts}")
