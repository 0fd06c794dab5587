"""Where the instruments of the study read a built Model: the gate of every SE
block and the output of every activation and max-pool layer, found in its
graph by scope and op type, in network order (the order the ops were made).

Only the copy of the network that follows `is_training` (the Model's
ops_prefix) is read, not the copy the train_op runs. Under several replicas
that is the first replica's tower, which sees the first rows of each batch.
"""
import dataclasses
import re

import tensorflow as tf

ACTIVATION_OPS = {'relu': 'Relu', 'selu': 'Selu'}  # op type of each config['activation_fn']
POOL_OP = 'MaxPool'
SE_SCOPE = '/se/'
GATE = re.compile(r'^(.*?)/?se/fc2/(sigmoid|tanh|relu)$')  # Model.squeeze_excite's gate


@dataclasses.dataclass(frozen=True)
class Probe:
    """One tensor the instruments read: its name in the network ('conv1',
    'stage2/block1', 'se'), its kind ('selu', 'relu', 'max pool', 'se gate')."""
    name: str
    kind: str
    tensor: object


def network_ops(model):
    """The ops of the network copy that follows is_training, in graph order."""
    return [op for op in model.X.graph.get_operations() if op.name.startswith(model.ops_prefix)]


def _local_name(model, op):
    return op.name[len(model.ops_prefix):]


def se_gates(model):
    """A Probe per SE block, its gate s of shape [batch, C]; named by the
    block it sits in ('stage4/block6'), or 'se' for the custom model's."""
    probes = []
    for op in network_ops(model):
        match = GATE.match(_local_name(model, op))
        if match:
            probes.append(Probe(match[1] or 'se', 'se gate', op.outputs[0]))
    return probes


def layer_outputs(model):
    """A Probe per activation layer of the network (SE blocks' own inner
    ReLU and gate left out) and per max pool, named by their scope
    ('conv1', 'stage3/block2/conv1', 'head/fc1', 'pool1')."""
    activation = model.architecture.activation_name
    kinds = {ACTIVATION_OPS[activation]: activation, POOL_OP: 'max pool'}
    probes = []
    for op in network_ops(model):
        name = _local_name(model, op)
        if op.type in kinds and SE_SCOPE not in f'/{name}':
            scope = name.rsplit('/', 1)[0] if op.type == ACTIVATION_OPS[activation] else name
            probes.append(Probe(scope, kinds[op.type], op.outputs[0]))
    return probes


def has_batch_norm(model):
    """Whether the network normalises batches (ResNet50): its training and
    inference modes then compute different activations. Told by its moving
    averages: the batch-norm ops themselves sit inside tf.cond's functions."""
    variables = model.X.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
                                             model.variables_prefix)
    return any(v.op.name.endswith('/moving_mean') for v in variables)
