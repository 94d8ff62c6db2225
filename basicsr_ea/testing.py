"""Stand-ins for pretrained weights that cannot be downloaded here, for tests and benchmarks only."""
import torch
import torchvision


def write_random_vgg19(path):
    """torchvision's VGG19 layout with random conv weights; the classifier, which the perceptual loss never runs, is
    stored as stride-0 zeros (80 MB instead of 550), which a strict ``load_state_dict`` still accepts. Returns the
    state dict written. Seeded, and without touching the caller's random state: the same file in any test order."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vgg19 = torchvision.models.vgg19()
    state = {k: torch.zeros(1).expand(v.shape) if k.startswith('classifier') else v for k, v in vgg19.state_dict().items()}
    torch.save(state, path)
    return state
