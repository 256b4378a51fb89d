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
    embeddings are gathered and every replica computes the loss of the whole global batch
    (the same value on each), differentiable through its own rows only: the gather needs no
    backward collective, and the replicas' gradients SUMMED are the gradients of one replica
    holding the concatenated global batch (each holds a disjoint share of the chain rule).
    A step runs one collective for the loss besides the gradients' all-reduce (a
    differentiable ``all_gather`` runs five); the extra work is a few [N, N] products. Every
    replica holds the same number of windows (the trainer's per-replica batch).

    Args:
        z1: [n, D] embeddings of the first views on this replica (normalised here).
        z2: [n, D] embeddings of the second views, same windows in the same order.
        temperature: softmax temperature tau.
        replica_context: ``tf.distribute.get_replica_context()`` inside ``strategy.run``;
            None (or one replica) means the local batch is the whole batch.
        return_gathered: also return the number of windows the loss saw (the gathered
            global batch), so callers can show the negatives really span all replicas.

    Returns:
        A scalar: the mean loss over the global batch's 2N anchors. Sum its gradients over
        the replicas; do not divide it by their number. With ``return_gathered``, the pair
        (loss, windows gathered).
    """
    z1 = tf.math.l2_normalize(z1, axis=1)
    z2 = tf.math.l2_normalize(z2, axis=1)
    if replica_context is not None and replica_context.num_replicas_in_sync > 1:
        replicas = replica_context.num_replicas_in_sync
        replica = tf.cast(replica_context.replica_id_in_sync_group, tf.int32)
        local = tf.shape(z1)[0]
        mine = tf.concat([z1, z2], axis=1)  # both views travel together
        # The gather as one all-reduce of values only: each replica's rows in its own slot
        # of zeros, summed (exact: x + 0 = x). A differentiable ``all_gather`` runs five
        # collectives: sizes and values forward; an all-reduce, sizes and values backward.
        slots = tf.scatter_nd(
            tf.reshape(replica, [1, 1]),
            tf.stop_gradient(mine)[None],
            tf.stack([replicas, local, tf.shape(mine)[1]]),
        )
        gathered = tf.reshape(
            replica_context.all_reduce(tf.distribute.ReduceOp.SUM, slots), [-1, tf.shape(mine)[1]]
        )
        # This replica's own rows go back into their place as the differentiable tensors
        # they are.
        start = replica * local
        z1, z2 = tf.split(
            tf.concat([gathered[:start], mine, gathered[start + local :]], axis=0), 2, axis=1
        )
    total = tf.shape(z1)[0]
    positives = tf.range(total)
    self_mask = tf.eye(total, dtype=z1.dtype) * LARGE_NUM

    logits_11 = tf.matmul(z1, z1, transpose_b=True) / temperature - self_mask
    logits_22 = tf.matmul(z2, z2, transpose_b=True) / temperature - self_mask
    logits_12 = tf.matmul(z1, z2, transpose_b=True) / temperature
    logits_21 = tf.transpose(logits_12)

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
