"""Training and sweeps from Python, for notebooks:

    from trainer import api
    run = api.train(dataset_name='digits', max_epochs=2)
    run.best['test_accuracy'], run.history[-1]['valid_loss'], run.files['plot']
    api.show(run)                                    # its figures, inline
    study = api.sweep('se', experiment_seeds=[1, 2, 3], max_epochs=1)
    study.table[0]['configuration'], study.files['report.pdf']

Each call runs main.py or experiments.py in a child process with the
keyword arguments as key=value, so the notebook's own TensorFlow (eager,
its devices, its memory) is never touched, and prints the child's console
lines as they come. The keys are checked here first, without TensorFlow: a
wrong one raises ConfigError at once, as the command line would say it.
Interrupting the cell stops the run as Ctrl-C stops main.py: its checkpoint
is saved where it stood and resume=True continues it."""
from trainer.api.commands import Run, RunFailed, Sweep, sweep, train
from trainer.api.figures import Picture, show

__all__ = ['Picture', 'Run', 'RunFailed', 'Sweep', 'show', 'sweep', 'train']
