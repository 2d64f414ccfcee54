"""`Loss` objects describe their loss (help, __doc__), and `robust_losses.register` makes a user's loss
available by name to get, names, hparam_types, required_hparams and configs.

Bugs these tests were checked to catch (each planted as a one-line change, seen to fail here, reverted):
* registry.Loss.__init__ without its __doc__ line (the class docstring shows) ->
  test_help_shows_the_loss_s_own_docstring.
* registry.register without the built-in name check (``if name in _REGISTRY and not overwrite``) ->
  test_re_registering_a_name_is_an_error_unless_overwrite.
* registry.register not restoring the registry after a failed check -> test_contract_violations_are_errors
  (the rejected loss stays listed by names()).
"""

import pydoc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import robust_losses as rl
from robust_losses import protocol, registry

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.3, -0.2]], np.float32)
IDS = np.array([0, 2])


@pytest.fixture
def fresh_registry(monkeypatch):
  """Registrations made by a test are dropped after it."""
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def scaled_cross_entropy(logits, labels, *, scale: float = 2.0, where=None):
  """Cross entropy times `scale`: a user's loss."""
  return scale * rl.softmax_cross_entropy(logits, labels, where=where)


def test_help_shows_the_loss_s_own_docstring():
  loss = rl.get("generalized_cross_entropy", q=0.5)
  assert loss.__doc__.startswith("Loss('generalized_cross_entropy', q=0.5, label_smoothing=0.0): ")
  assert "q=0.5, label_smoothing=0.0 bound" in loss.__doc__
  assert rl.generalized_cross_entropy.__doc__.strip().splitlines()[0] in loss.__doc__
  text = pydoc.render_doc(loss, renderer=pydoc.plaintext)
  assert "Generalized cross entropy" in text and "Zhang & Sabuncu" in text and "q=0.5" in text
  assert "A registered loss with its hyperparameters bound" not in text  # not the generic class docstring
  assert loss.__name__ == "generalized_cross_entropy"
  assert "example_state" in str(loss.__signature__)
  # Still a frozen, value-equal object, and a Loss stored on a class stays itself.
  assert loss == rl.get("generalized_cross_entropy", q=0.5)

  class Holder:
    fn = loss

  assert Holder().fn is loss and Holder.fn is loss


def test_loss_objects_pickle_by_name_and_hyperparameters():
  import pickle

  loss = rl.get("forward_corrected_cross_entropy", transition_matrix=np.eye(3))
  again = pickle.loads(pickle.dumps(loss))
  assert again == loss and again.__doc__ == loss.__doc__


def test_a_registered_loss_works_through_get_names_and_hparam_types(fresh_registry):
  assert rl.register(scaled_cross_entropy) is scaled_cross_entropy
  assert "scaled_cross_entropy" in rl.names()
  assert rl.hparam_types()["scale"] is float
  assert rl.required_hparams("scaled_cross_entropy") == []
  loss = rl.get("scaled_cross_entropy", scale=3.0, label_smoothing=0.1)
  assert loss.hparams == {"scale": 3.0, "label_smoothing": 0.1}
  smoothed = 0.9 * np.eye(3, dtype=np.float32)[IDS] + 0.1 / 3
  np.testing.assert_allclose(loss(LOGITS, IDS), 3.0 * rl.softmax_cross_entropy(LOGITS, smoothed), rtol=1e-6)
  assert loss.__doc__.endswith("Cross entropy times `scale`: a user's loss.")
  assert not (loss.uses_batch_statistics or loss.uses_epoch or loss.example_state_keys)
  np.testing.assert_allclose(jax.jit(lambda z: loss(z, IDS))(LOGITS), loss(LOGITS, IDS), rtol=1e-6)
  with pytest.raises(TypeError, match=r"hyperparameter scale='x' of loss 'scaled_cross_entropy' must be a float"):
    rl.get("scaled_cross_entropy", scale="x")


def test_a_registered_stateful_loss_uses_the_protocol(fresh_registry):
  def counted_cross_entropy(logits, labels, *, counts=None, where=None, return_aux=False):
    losses = rl.softmax_cross_entropy(logits, labels, where=where)
    return (losses, {"example_state": {"counts": counts + 1.0}}) if return_aux else losses

  training = protocol.Training(example_state=lambda num_classes: {"counts": np.float32(0.0)})
  rl.register(counted_cross_entropy, name="counted", training=training)
  loss = rl.get("counted")
  assert loss.example_state_keys == ("counts",)
  state = loss.init_example_state(5, 3)
  assert state["counts"].shape == (5,)
  _, aux = loss.call_with_aux(LOGITS, IDS, example_state={"counts": state["counts"][:2]})
  np.testing.assert_array_equal(aux["example_state"]["counts"], [1.0, 1.0])
  with pytest.raises(ValueError, match=r"counted keeps per-example state \['counts'\] and was called without"):
    loss(LOGITS, IDS)


def test_re_registering_a_name_is_an_error_unless_overwrite(fresh_registry):
  def softmax_cross_entropy(logits, labels, *, where=None):
    return 2.0 * rl.softmax_cross_entropy(logits, labels, where=where)

  with pytest.raises(ValueError, match=r"'softmax_cross_entropy' is already a built-in loss; pass overwrite=True"):
    rl.register(softmax_cross_entropy)
  rl.register(scaled_cross_entropy)
  with pytest.raises(ValueError, match=r"'scaled_cross_entropy' is already a loss registered earlier"):
    rl.register(scaled_cross_entropy)
  rl.register(softmax_cross_entropy, overwrite=True)
  np.testing.assert_allclose(
    rl.get("softmax_cross_entropy")(LOGITS, IDS), 2.0 * rl.softmax_cross_entropy(LOGITS, IDS), rtol=1e-6
  )


def _no_where(logits, labels, *, scale: float = 1.0):
  return scale * rl.softmax_cross_entropy(logits, labels)


def _positional_hparam(logits, labels, scale=1.0, *, where=None):
  return scale * rl.softmax_cross_entropy(logits, labels, where=where)


def _array_default(logits, labels, *, weights_per_class=[1.0, 2.0], where=None):  # noqa: B006
  return rl.softmax_cross_entropy(logits, labels, where=where)


def _reduces(logits, labels, *, where=None):
  return rl.softmax_cross_entropy(logits, labels, where=where).mean()


def _int_alpha(logits, labels, *, alpha: int = 2, where=None):
  return rl.softmax_cross_entropy(logits, labels, where=where)


def _epoch_default(logits, labels, *, epoch=0, where=None):
  return rl.softmax_cross_entropy(logits, labels, where=where)


CONTRACT = [
  (_no_where, ValueError, r"must take the per-example mask as a keyword-only `where=None`"),
  (_positional_hparam, ValueError, r"exactly two positional parameters, the rest keyword-only"),
  (_array_default, TypeError, r"hyperparameter weights_per_class=\[1.0, 2.0\] .* must default to a float, int, str"),
  (_reduces, ValueError, r"must return per-example losses of shape logits.shape\[:-1\]; .* returned \(\)"),
  (_int_alpha, TypeError, r"hyperparameter 'alpha' has type int in _int_alpha but float elsewhere"),
  (_epoch_default, ValueError, r"call argument 'epoch' must default to None; got 0"),
]


@pytest.mark.parametrize("fn,error,match", CONTRACT, ids=[c[0].__name__ for c in CONTRACT])
def test_contract_violations_are_errors(fresh_registry, fn, error, match):
  with pytest.raises(error, match=match):
    rl.register(fn)
  assert fn.__name__ not in rl.names()
  rl.hparam_types()  # the registry is intact


def test_config_placeholders_include_a_loss_registered_before_the_config(fresh_registry):
  ml_collections = pytest.importorskip("ml_collections")
  del ml_collections
  from configs import default

  def margin_loss(logits, labels, *, margin_width: float = 0.5, where=None):
    return rl.softmax_cross_entropy(logits + margin_width, labels, where=where)

  assert "margin_width" not in default.loss_config()
  rl.register(margin_loss)
  config = default.loss_config("margin_loss", margin_width=0.25)
  assert config.margin_width == 0.25 and config.name == "margin_loss"
  hparams = {k: v for k, v in config.items() if k != "name" and v is not None}
  loss = rl.get(config.name, **hparams)
  np.testing.assert_allclose(loss(LOGITS, IDS), rl.softmax_cross_entropy(LOGITS + 0.25, IDS), rtol=1e-6)
  assert jnp.asarray(loss(LOGITS, IDS)).shape == (2,)
