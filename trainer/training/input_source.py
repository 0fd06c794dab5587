"""Opens the configured dataset and makes its input source: numpy arrays
(loaders.py, fed by input_pipeline.ArrayInput) or streamed TFRecords
(TFRecordsReader.py, its TFRecordInput)."""
import TFRecordsReader
from foundation.data import input_pipeline, loaders
from foundation.errors import DataError


def open_dataset(cfg, data_dir):
    """The dataset cfg names, from `data_dir`: an ArrayDataset or a
    TFRecordsReader.RecordDataset, checked against the config."""
    name = cfg['dataset_name']
    opener = TFRecordsReader.OPENERS.get(name)
    data = opener(data_dir, cfg) if opener else loaders.DATASETS[name].load(data_dir, cfg['seed'],
                                                                       cfg['download'])
    train_images = data.num_examples('train')
    if cfg['batch_size'] > train_images:
        raise DataError(f"batch_size={cfg['batch_size']} is larger than the training split "
                        f"({train_images} images); choose batch_size <= {train_images}")
    if data.num_classes != cfg['output_shape']:
        raise DataError(f"{data_dir} holds {data.num_classes} classes but output_shape="
                        f"{cfg['output_shape']}; set output_shape={data.num_classes}")
    return data


def make_input(data, cfg, shard=None):
    """The input source of an opened dataset; `shard`: (this worker,
    workers) of a multi-worker job."""
    options = input_pipeline.options_from_config(cfg)
    if isinstance(data, TFRecordsReader.RecordDataset):
        return TFRecordsReader.TFRecordInput(data, options, shard)
    return input_pipeline.ArrayInput(data, options.batch_size, options.eval_batch_size,
                                     options.train_eval_images, options.augmentation, shard)
