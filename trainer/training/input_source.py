"""Opens the configured dataset and makes its input source: numpy arrays
(loaders.py, fed by input_pipeline.ArrayInput) or streamed TFRecords
(TFRecordsReader.py, its TFRecordInput)."""
import TFRecordsReader
from foundation.data import input_pipeline, loaders
from foundation.errors import ConfigError, DataError


def open_dataset(cfg, data_dir):
    """The dataset cfg names, from `data_dir`: an ArrayDataset or a
    TFRecordsReader.RecordDataset, checked against the config, its training
    split cut down as a quick run asks (training_part)."""
    name = cfg['dataset_name']
    opener = TFRecordsReader.OPENERS.get(name)
    data = opener(data_dir, cfg) if opener else loaders.DATASETS[name].load(data_dir, cfg['seed'],
                                                                       cfg['download'])
    data = training_part(data, cfg)
    train_images = data.num_examples('train')
    if cfg['batch_size'] > train_images:
        raise DataError(f"batch_size={cfg['batch_size']} is larger than the training split "
                        f"({train_images} images); choose batch_size <= {train_images}")
    if data.num_classes != cfg['output_shape']:
        raise DataError(f"{data_dir} holds {data.num_classes} classes but output_shape="
                        f"{cfg['output_shape']}; set output_shape={data.num_classes}")
    return data


def training_part(data, cfg):
    """The dataset with the training split a quick run trains on: a
    stratified sample of train_images images (drawn with the run's seed), or
    the first overfit_batches batches; the whole split otherwise. The
    validation and test splits stay whole."""
    streamed = isinstance(data, TFRecordsReader.RecordDataset)
    held = data.num_examples('train')
    if cfg['train_images'] is not None:
        check_held('train_images', cfg['train_images'], f"train_images={cfg['train_images']}", held)
        sample = TFRecordsReader.with_training_sample if streamed else loaders.with_training_sample
        return sample(data, cfg['train_images'], cfg['seed'])
    if cfg['overfit_batches'] is not None:
        count = cfg['overfit_batches'] * cfg['batch_size']
        check_held('overfit_batches', count, f"overfit_batches={cfg['overfit_batches']} x batch_size="
                                             f"{cfg['batch_size']} = {count} images", held)
        first = TFRecordsReader.with_first_training_records if streamed else loaders.with_first_training_images
        return first(data, count)
    return data


def check_held(key, count, asked, held):
    """ConfigError where a quick run asks for more training images than the split holds."""
    if count > held:
        raise ConfigError(f"{asked} is more than the training split holds ({held} images); lower {key}")


def training_part_line(cfg, data):
    """What a run with train_images trains on, for the console; '' for another."""
    if cfg['train_images'] is None:
        return ''
    how = getattr(data, 'train_sample', 'stratified')
    why = " (dataset.json holds no labels of the training records to stratify by)" if how == 'uniform' else ''
    return (f"Training on {cfg['train_images']} images of the training split: a {how} sample{why}, "
            f"drawn with seed {cfg['seed']}; validation and test splits whole")


def make_input(data, cfg, shard=None):
    """The input source of an opened dataset; `shard`: (this worker,
    workers) of a multi-worker job."""
    options = input_pipeline.options_from_config(cfg)
    if isinstance(data, TFRecordsReader.RecordDataset):
        return TFRecordsReader.TFRecordInput(data, options, shard)
    return input_pipeline.ArrayInput(data, options.batch_size, options.eval_batch_size,
                                     options.train_eval_images, options.augmentation, shard,
                                     options.fixed_order)
