"""The one configuration of a run, and the directories derived from it.

Edit `config` here, or override any key on the command line:
    python main.py model=resnet50 use_se=True activation_fn=selu
settings.py checks every key and value before a graph is built.
"""
import os

import layers

PROJECT_DIR = os.path.dirname(os.path.abspath(__file__))

config = {
    # --- what to train -----------------------------------------------------
    'datasets': ['digits', 'mnist', 'cifar_32', 'cifar_128', 'imagenet'],  # dataset names
    'dataset_name': 'digits',  # which one: digits ships with scikit-learn, no download
    'models': ['custom_model', 'resnet50'],  # model names
    'model': 'custom_model',  # which one: the "Sample" CNN or ResNet50
    'activation_functions': {'selu': layers.selu, 'relu': layers.relu},  # name -> function
    'activation_fn': 'relu',  # which activation the whole network uses
    'use_se': False,  # put Squeeze-and-Excitation blocks into the model
    'se_r': 16,  # SE reduction ratio r: hidden units = channels / r
    'se_squeeze': 'avg',  # SE squeeze: global 'avg' (the paper's) or 'max' pooling of each map
    'se_excitation': 'sigmoid',  # SE gate: 'sigmoid' (the paper's), 'tanh' or 'relu'
    'se_integration': 'standard',  # ResNet50: where the SE block sits, 'standard', 'pre', 'post' or
        # 'identity' (see Models)
    'se_stages': [2, 3, 4, 5],  # ResNet50 stages (2-5, conv2_x-conv5_x) whose blocks get SE
    'selu_residual_scale': 0.7071,  # SELU ResNet50: each block computes AF(s * (residual +
        # shortcut)); 1/sqrt(2) keeps the variance at 1
    'dropout': 0.0,  # drop rate of the hidden FC layers while training (alpha dropout with SELU)
    'output_shape': 10,  # units of the last FC layer = number of classes of the dataset
    'pool_size': [2, 2],  # max-pool window of the custom model
    'strides': 2,  # max-pool stride of the custom model
    'init_weights': None,  # ResNet50: path of Keras'
        # resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5; a fresh run starts its trunk from it
        # (see Models)

    # --- optimisation ------------------------------------------------------
    'optimizer': 'adam',  # 'adam', 'adamw' (Adam with decoupled weight decay), 'momentum' (SGD with
        # momentum) or 'nesterov' (SGD with Nesterov momentum)
    'momentum': 0.9,  # momentum of the 'momentum' and 'nesterov' optimizers
    'learning_rate': 1e-3,  # initial step size
    'lr_schedule': 'exponential',  # 'exponential', 'piecewise' or 'cosine' (from
        # learning_rate to 0 at max_epochs, or at max_steps where that comes first)
    'decay_steps': 100000,  # exponential LR decay: lr * decay_base ** (step / decay_steps)
    'decay_base': 0.96,  # exponential LR decay: base
    'lr_boundaries': [5, 8],  # piecewise: after each of these epochs the LR is multiplied by
        # lr_factor
    'lr_factor': 0.1,  # piecewise: LR multiplier at each boundary
    'warmup_epochs': 0.0,  # the LR rises linearly from learning_rate / warmup steps to the schedule's
        # over this many epochs (a fraction allowed), in front of any schedule
    'plateau_patience': None,  # reduce on plateau: the LR is multiplied by plateau_factor after this
        # many epochs without a validation loss lower by min_delta (None: off)
    'plateau_factor': 0.1,  # reduce on plateau: LR multiplier
    'early_stopping_patience': None,  # stop after this many epochs without a validation loss lower
        # by min_delta; the best epoch is tested as always (None: off)
    'min_delta': 0.0,  # early stopping and plateau: the least fall of the validation loss that counts
    'weight_decay': 0.0,  # L2 penalty weight_decay * sum(w²) / 2 on conv kernels and FC weights;
        # biases and batch-norm parameters are left alone; with 'adamw', the decoupled decay
        # w -= lr * weight_decay * w each step instead
    'clip_grad_norm': None,  # gradients scaled down to this global norm where above it (None: off)
    'ema_decay': None,  # keep a moving average of the weights (e.g. 0.999), updated every step and
        # evaluated, tested and exported instead of them (None: off)
    'label_smoothing': 0.0,  # training targets (1 - e) * one_hot + e / classes (the reported losses
        # stay plain cross-entropy)
    'batch_size': 50,  # images per training step
    'augment': False,  # training images get a random shifted crop (1/8 of the side, reflected
        # padding), and a mirror flip except for handwritten digits
    'mixup_alpha': None,  # mixup: each training image and label mixed with another's of its batch by
        # a Beta(alpha, alpha) share (e.g. 0.2; None: off)
    'cutmix_alpha': None,  # cutmix: a box of another image of the batch pasted in, labels mixed by
        # area (e.g. 1.0); with mixup, each batch takes one of the two at even odds
    'max_epochs': 10,  # passes over the training set
    'train_images': None,  # quick runs: train on a stratified sample of this many training images,
        # drawn with seed (None: the whole training split; valid and test stay whole)
    'max_steps': None,  # quick runs: stop after this many optimiser steps in all, the last epoch cut
        # short, then test as at the end (None: max_epochs alone decides)
    'overfit_batches': None,  # quick runs: train on the first N training batches only (unshuffled,
        # unaugmented) for max_epochs epochs, then say whether their loss fell near zero
    'seed': 42,  # seeds weights, data splits and shuffling: equal seeds, equal runs
    'deterministic': False,  # TensorFlow's deterministic ops: equal seeds give bit-equal runs, a little
        # slower (see docs/recipes.md)

    # --- reporting and outputs ---------------------------------------------
    'log_every': 2500,  # print a progress line every this many training images (at least four an epoch)
    'profile_steps': None,  # [first, last]: TensorFlow's profiler traces these optimiser steps of the
        # run (counted from 1 over all its epochs) into its folder, for TensorBoard's Profile tab
    'eval_batch_size': 250,  # images per step when evaluating (larger: faster, more memory)
    'keep_checkpoints': 2,  # newest checkpoints kept in the run's directory
    'keep_earlier_runs': 5,  # a fresh start keeps the run of the same name as <run>.earlier-<time>;
        # this many are kept
    'resume': False,  # continue the run of this model/SE/activation from its last checkpoint
    'run_name': None,  # name of the run's outputs; None: model, SE and activation, e.g.
        # resnet50_se_selu
    'datasets_root': os.path.join(PROJECT_DIR, 'datasets'),  # holds <dataset>/data_dir and
        # <dataset>/save_dir
    'data_dir': None,  # input files; None means datasets_root/<dataset_name>/data_dir
    'download': True,  # fetch missing MNIST / CIFAR-10 files from their official addresses

    # --- streamed datasets (cifar_128, imagenet): TFRecords -----------------
    'shuffle_buffer': 2048,  # records in the streaming reader's shuffle buffer (memory: buffer x
        # record size)
    'skip_bad_records': False,  # skip bad records (wrong size, label or split, a JPEG that does not
        # decode) and unreadable or short files instead of stopping; for TFRecordsWriter, leave out
        # ImageNet images that cannot be read
    'train_eval_images': 10000,  # the epoch's train loss/accuracy are measured on this many
        # training images (None: all)
    'resize_batch_size': 1000,  # images per step of ImageResizer and TFRecordsWriter (bounds their
        # memory)
    'tfrecord_shards': None,  # {split: shards} for TFRecordsWriter; None: 8/2/2 for CIFAR, 1024/128
        # for ImageNet
    'malloc_mmap_threshold': 32768,  # bytes: glibc hands larger freed blocks back to the system at
        # once, so a streamed run's memory stays flat over epochs (None: glibc's default)
    'one_pass': False,  # TFRecordsWriter resizes CIFAR itself, without ImageResizer's .npy files
    'imagenet_dir': None,  # for TFRecordsWriter: the folder with train/<wnid>/*.JPEG and
        # val/<wnid>/*.JPEG
    'imagenet_metadata_file': None,  # for TFRecordsWriter: TensorFlow's imagenet_metadata.txt
        # (wnid<TAB>name), for image/class/text
    'imagenet_bbox_file': None,  # for TFRecordsWriter: TensorFlow's bounding-box CSV
        # (file,xmin,ymin,xmax,ymax), for image/object/bbox/*
    'imagenet_classes': 'official',  # 'official': the outputs are the 1000 synsets of TensorFlow's
        # list, FC 1000 even for a subset; 'present': only the synsets the records hold
        # (output_shape = their number)

    # --- sweeps: python experiments.py runs every configuration of a grid ----
    # A grid is {key: [values]} (every combination) or a list of such (their union);
    # key=value arguments of experiments.py apply to every run.
    'experiment_grids': {  # name -> grid; the grids experiments.py can run
        'seed': {'model': ['custom_model', 'resnet50'], 'use_se': [False, True],
                 'activation_fn': ['relu', 'selu']},  # the original study: both networks x SE x activation
        'se': {'use_se': [False, True]},  # one contrast: SE against no SE on config['model']
        'selu': {'activation_fn': ['relu', 'selu']},  # one contrast: SELU against ReLU on config['model']
        'se_ablation': [  # the SE paper's squeeze and excitation ablations on config['model']
            {'use_se': [False, True]},
            {'use_se': [True], 'se_squeeze': ['max']},
            {'use_se': [True], 'se_excitation': ['tanh', 'relu']},
        ],
        'se_ratio': [  # the SE paper's reduction ratios (its Table 5) on config['model']
            {'use_se': [False]},
            {'use_se': [True], 'se_r': [2, 4, 8, 16, 32]},
        ],
        'se_stages': [  # the SE paper's SE in one stage only, and in all (its Table 9): ResNet50
            {'model': ['resnet50'], 'use_se': [False]},
            {'model': ['resnet50'], 'use_se': [True], 'se_stages': [[2], [3], [4], [2, 3, 4, 5]]},
        ],
        'se_integration': [  # the SE paper's Fig. 5 variants (residual blocks: ResNet50 only)
            {'model': ['resnet50'], 'use_se': [False, True]},
            {'model': ['resnet50'], 'use_se': [True], 'se_integration': ['pre', 'post', 'identity']},
        ],
    },
    'experiment_grid': 'seed',  # which grid python experiments.py runs
    'experiment_seeds': None,  # e.g. [1, 2, 3]: experiments.py runs every configuration once per
        # seed and tables the mean and spread (None: once, with seed)
    'max_runs': 100,  # experiments.py refuses a sweep of more runs than this before any starts
        # (None: no bound)
    'workers': 1,  # experiments.py: worker processes on this machine sharing the sweep, each pinned to
        # one GPU, or to its share of the CPU cores where there is none
    'worker_index': None,  # experiments.py: this worker's fixed share of the runs (0 ... num_workers - 1);
        # None: Slurm's SLURM_ARRAY_TASK_ID where set, else every run not taken by another worker
    'num_workers': None,  # experiments.py: how many fixed shares (None: SLURM_ARRAY_TASK_COUNT where set)

    # --- after training: evaluate.py, predict.py, export.py, instruments.py ----
    'checkpoint': 'best',  # the run's checkpoint they use: 'best' (validation), 'newest', or a checkpoint's path
    'eval_split': 'test',  # the split evaluate.py evaluates: 'train', 'valid' or 'test'
    'excitation_split': 'valid',  # instruments.py: the split whose classes the SE excitations are measured on
    'cam_images': 8,  # class activation maps (Grad-CAM) of the first this many validation images, at the end
        # of every run and by instruments.py
    'top_k': 5,  # predict.py: the most probable classes listed for each image
    'misclassified_images': 25,  # evaluate.py draws this many of the most confidently misclassified images

    # --- device ------------------------------------------------------------
    'device': '/device:GPU:0',  # where the model is built; falls back to the CPU when there is no
        # GPU
    'num_gpus': 1,  # train data-parallel on this many GPUs of the machine (MirroredStrategy);
        # batch_size is the global batch, split among them
    'peer_wait_seconds': 600.0,  # a worker of a multi-machine job (TF_CONFIG) waits this long for
        # the other workers to start, then stops naming those missing
    'gpu_memory_growth': True,  # take GPU memory as needed instead of all of it at start
    'gpu_memory_fraction': None,  # or cap the GPU memory taken, 0 < f <= 1 (None: no cap)
    'log_device_placement': False,  # print the device of every op (also set TF_CPP_MIN_LOG_LEVEL=0)
    'data_format': 'auto',  # 'NHWC' or 'NCHW' inside the model; auto: NCHW on a GPU in float32, else NHWC
    'mixed_precision': 'auto',  # float16 (GPU) / bfloat16 (CPU) compute with loss scaling; auto: on a
    # GPU, and on a CPU with native bfloat16 for the networks measured to gain (docs/devices.md)
    'xla': 'auto',  # XLA JIT compilation of the graph; auto: on a GPU only (slower on the CPU)
}


def derived_dirs(cfg):
    """DATA_DIR, SAVE_DIR and its sub-directories for the final config."""
    dataset_dir = os.path.join(cfg['datasets_root'], cfg['dataset_name'])
    save_dir = os.path.join(dataset_dir, 'save_dir')
    return {
        'DATA_DIR': cfg['data_dir'] or os.path.join(dataset_dir, 'data_dir'),
        'SAVE_DIR': save_dir,
        'FILTERS_SAVE_DIR': os.path.join(save_dir, 'filters'),
        'PLOT_TRAINING_SAVE_DIR': os.path.join(save_dir, 'plot_training'),
        'RUNS_SAVE_DIR': os.path.join(save_dir, 'runs'),  # checkpoints, history, TensorBoard
    }


def run_name(cfg):
    """Names a run's outputs: config['run_name'], or by model, SE and
    activation, e.g. resnet50_se_selu, and a quick run's keys after them."""
    if cfg.get('run_name'):
        return cfg['run_name']
    se = '_se' if cfg['use_se'] else ''
    return f"{cfg['model']}{se}_{cfg['activation_fn']}{name_parts(cfg)}"


# Keys that, when on, become part of a run's name (key, its part of the name):
# a quick run or a training recipe never shares its outputs with a plain run.
NAME_PARTS = [('train_images', 'train_images'), ('max_steps', 'max_steps'), ('overfit_batches', 'overfit'),
              ('warmup_epochs', 'warmup'), ('plateau_patience', 'plateau'),
              ('early_stopping_patience', 'early_stop'), ('clip_grad_norm', 'clip'), ('ema_decay', 'ema'),
              ('mixup_alpha', 'mixup'), ('cutmix_alpha', 'cutmix')]


def name_parts(cfg):
    """What the keys of NAME_PARTS that are on add to a run's name:
    _train_images-500, _max_steps-200, _overfit-2, _warmup-2, _ema-0.999."""
    return ''.join(f'_{name}-{cfg[key]:g}' for key, name in NAME_PARTS if cfg.get(key) not in (None, 0))
