"""Where training and inference run, and how a network is optimised: shared by every training stage.

``compute`` (a top-level section of ``params.yaml``) is a property of the machine: one GPU, several, or
the CPU. ``EngineSpec`` (one per training stage: ``pretrain.engine``, ``noisy.engine``,
``evaluate.finetune.engine``) is a property of the run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from retailnb.config.base import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Spec

Accelerator = Literal["auto", "cpu", "cuda", "gpu", "mps"]
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]


class ComputeSpec(Spec):
    """Placement of every training stage (Lightning Fabric's settings).

    Attributes:
        accelerator: Fabric accelerator.
        devices: devices (processes) per node; more than one, or more than one node, runs the stage under
            ``torchrun``.
        nnodes: machines taking part in the run; more than one needs ``rdzv_endpoint``.
        node_rank: this machine's index among the ``nnodes`` (0 on the one whose rank 0 writes the outputs).
        rdzv_endpoint: ``host:port`` where the nodes meet (torchrun's c10d rendezvous, served by the node
            at that address); empty for a single-node run (torchrun's ``--standalone``).
        strategy: Fabric strategy (``auto`` picks DDP when several processes run).
        precision: ``auto`` picks bf16 mixed precision on CUDA and fp32 elsewhere, or a Fabric value.
        num_workers: DataLoader worker processes for augmentation.
        channels_last: lay weights and activations out channels-last (oneDNN's and tensor cores'
            preferred layout).
        images: where decoded images are held, for training and for the probe images of the evaluation,
            the noisy student and the pretraining monitor: ``memory`` (one array, fastest while it fits) or
            ``disk`` (the on-disk cache of :mod:`retailnb.data.cache`, read a batch at a time, so memory does
            not grow with the number of images).
        resume: ``auto`` continues an interrupted run from its saved state (same parameters and data);
            ``never`` ignores any saved state and trains from the start, overwriting it (the way out of a
            corrupt ``train_state.pt``).
    """

    accelerator: Accelerator
    devices: PositiveInt
    nnodes: PositiveInt
    node_rank: NonNegativeInt
    rdzv_endpoint: str
    strategy: str
    precision: Precision
    num_workers: NonNegativeInt
    channels_last: bool
    images: Literal["memory", "disk"]
    resume: Literal["auto", "never"]

    @model_validator(mode="after")
    def _nodes_meet_somewhere(self) -> ComputeSpec:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"compute.node_rank ({self.node_rank}) must be below compute.nnodes ({self.nnodes})")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"compute.nnodes is {self.nnodes}: set compute.rdzv_endpoint to the host:port where the "
                             "nodes meet")
        return self

    @property
    def distributed(self) -> bool:
        """Whether the stage runs in several processes (under ``torchrun``)."""
        return self.devices > 1 or self.nnodes > 1


def check_warmup(epochs: int, warmup_epochs: float, epochs_key: str = "epochs") -> None:
    """Warm-up must end before the run does (one-epoch runs excepted)."""
    if epochs > 1 and warmup_epochs >= epochs:
        raise ValueError(f"warmup_epochs ({warmup_epochs}) must be below {epochs_key} ({epochs})")


class EngineSpec(Spec):
    """Optimisation of one training run.

    Attributes:
        epochs: passes over the data.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9).
        lr: peak learning rate, reached after warm-up.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        warmup_epochs: linear warm-up length in epochs (fractions allowed), below ``epochs``.
        seed: seeds model init, batches and augmentation.
    """

    epochs: PositiveInt
    optimizer: Literal["adamw", "sgd"]
    lr: PositiveFloat
    weight_decay: NonNegativeFloat
    warmup_epochs: NonNegativeFloat
    seed: int

    @model_validator(mode="after")
    def _warmup_within_run(self) -> EngineSpec:
        check_warmup(self.epochs, self.warmup_epochs)
        return self


class BackboneSpec(Spec):
    """The architecture every stage trains and evaluates, and the side of its square input images.

    Attributes:
        architecture: timm model name.
        image_size: side of the square images, in pixels (16 to 1024).
    """

    architecture: str
    image_size: Annotated[int, Field(ge=16, le=1024)]
