"""The contrastive objective: NT-Xent with negatives gathered across replicas.

Also the representation-quality measures of Wang & Isola (2020), used in evaluation.
"""

from __future__ import annotations

import tensorflow as tf

LARGE_NUM = 1e9


def nt_xent_loss(
    z1: tf.Tensor,
    z2: tf.Tensor,
    temperature: float,
    *,
    replica_context: tf.distribute.ReplicaContext | None = None,
    return_gathered: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """SimCLR's normalised-temperature cross-entropy over a batch of view pairs.

    Row i of ``z1`` and row i of ``z2`` are the two views of window i (the positive pair);
    every other view in the global batch is a negative: 2N - 2 negatives per anchor for a
    global batch of N windows. Under a strategy with several replicas the other replicas'
    embeddings are gathered (``all_gather`` is differentiable) and serve as negatives, so
    the mean of this loss over replicas equals the loss of one replica holding the
    concatenated global batch (same value, same gradients).

    Args:
        z1: [n, D] embeddings of the first views on this replica (normalised here).
        z2: [n, D] embeddings of the second views, same windows in the same order.
        temperature: softmax temperature tau.
        replica_context: ``tf.distribute.get_replica_context()`` inside ``strategy.run``;
            None (or one replica) means the local batch is the whole batch.
        return_gathered: also return the number of windows the loss saw (the gathered
            global batch), so callers can show the negatives really span all replicas.

    Returns:
        A scalar: the mean loss over this replica's 2n anchors. Divide by the number of
        replicas before summing gradients across them. With ``return_gathered``, the
        pair (loss, windows gathered).
    """
    z1 = tf.math.l2_normalize(z1, axis=1)
    z2 = tf.math.l2_normalize(z2, axis=1)
    local = tf.shape(z1)[0]
    if replica_context is not None and replica_context.num_replicas_in_sync > 1:
        # Both views in one gather: one collective forward, one backward.
        z1_all, z2_all = tf.split(
            replica_context.all_gather(tf.concat([z1, z2], axis=1), axis=0), 2, axis=1
        )
        offset = tf.cast(replica_context.replica_id_in_sync_group, tf.int32) * local
    else:
        z1_all, z2_all, offset = z1, z2, 0
    total = tf.shape(z1_all)[0]
    # Local anchor i sits at row offset + i of the gathered batch.
    positives = tf.range(local) + offset
    self_mask = tf.one_hot(positives, total, dtype=z1.dtype)

    logits_11 = tf.matmul(z1, z1_all, transpose_b=True) / temperature - self_mask * LARGE_NUM
    logits_22 = tf.matmul(z2, z2_all, transpose_b=True) / temperature - self_mask * LARGE_NUM
    logits_12 = tf.matmul(z1, z2_all, transpose_b=True) / temperature
    logits_21 = tf.matmul(z2, z1_all, transpose_b=True) / temperature

    # Candidates for a view-1 anchor: all view-2s (its positive among them), then all other
    # view-1s; symmetrically for view-2 anchors. The positive is column ``positives``.
    loss_1 = tf.nn.sparse_softmax_cross_entropy_with_logits(
        positives, tf.concat([logits_12, logits_11], axis=1)
    )
    loss_2 = tf.nn.sparse_softmax_cross_entropy_with_logits(
        positives, tf.concat([logits_21, logits_22], axis=1)
    )
    loss = tf.reduce_mean(tf.concat([loss_1, loss_2], axis=0))
    return (loss, total) if return_gathered else loss


def alignment(z1: tf.Tensor, z2: tf.Tensor, alpha: float = 2.0) -> tf.Tensor:
    """Mean ``||z1_i - z2_i||^alpha`` over positive pairs (lower: views agree more)."""
    return tf.reduce_mean(tf.norm(z1 - z2, axis=1) ** alpha)


def uniformity(z: tf.Tensor, t: float = 2.0) -> tf.Tensor:
    """``log mean_{i<j} exp(-t ||z_i - z_j||^2)`` (lower: embeddings spread more evenly)."""
    sq = tf.reduce_sum(tf.square(z), axis=1)
    dist2 = tf.maximum(sq[:, None] + sq[None, :] - 2.0 * tf.matmul(z, z, transpose_b=True), 0.0)
    n = tf.shape(z)[0]
    upper = tf.linalg.band_part(tf.ones([n, n], dtype=tf.bool), 0, -1)
    upper = tf.logical_and(upper, tf.logical_not(tf.eye(n, dtype=tf.bool)))
    pairs = tf.boolean_mask(dist2, upper)
    return tf.math.log(tf.reduce_mean(tf.exp(-t * pairs)))
