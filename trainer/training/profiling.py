"""profile_steps: TensorFlow's profiler traces the optimiser steps a user
names, into the run's folder, where TensorBoard's Profile tab reads them."""
import sys

import tensorflow as tf

from foundation.tf_errors import error_reason


class StepTrace:
    """Traces steps `first` to `last` (1-based, counted over the whole run,
    resumes included) into `logdir`; `done` steps were trained before. The
    training loop calls before_step / after_step around each step, and stop
    whatever ends it."""

    def __init__(self, first, last, logdir, done):
        self.first, self.last, self.logdir, self.step = first, last, logdir, done
        self.tracing = False

    def before_step(self):
        if not self.tracing and self.first <= self.step + 1 <= self.last:
            try:
                tf.profiler.experimental.start(self.logdir)
            except (tf.errors.OpError, ValueError) as error:  # another profiler runs in this process
                print(f'warning: profile_steps: the profiler did not start ({error_reason(error)}); '
                      'training goes on untraced', file=sys.stderr, flush=True)
                self.first = self.last + 1
                return
            self.tracing = True
            print(f'Profiling steps {self.step + 1} to {self.last}', flush=True)

    def after_step(self):
        self.step += 1
        if self.step >= self.last:
            self.stop()

    def stop(self):
        """Writes the trace of the steps traced so far, if any."""
        if not self.tracing:
            return
        self.tracing = False
        tf.profiler.experimental.stop()
        print(f"Profile of steps {self.first} to {self.step} written to {self.logdir}/plugins/profile "
              f"(TensorBoard's Profile tab)", flush=True)


def step_trace(cfg, directory, done):
    """The StepTrace of cfg's profile_steps for a run in `directory` that has
    trained `done` steps; None where it names none, or only steps done."""
    if cfg['profile_steps'] is None:
        return None
    first, last = cfg['profile_steps']
    if last <= done:
        print(f'profile_steps: steps {first} to {last} were trained before this resume; nothing to profile',
              flush=True)
        return None
    return StepTrace(first, last, directory, done)
