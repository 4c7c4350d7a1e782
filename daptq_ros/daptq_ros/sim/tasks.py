"""The task registry: MetaWorld env, instructions, scripted expert and step limit per task."""

from __future__ import annotations

from dataclasses import dataclass

from daptq_ros.errors import SimError


@dataclass(frozen=True)
class TaskSpec:
    """One task: its MetaWorld environment, phrasings of its instruction, expert and step limit."""

    name: str
    env_name: str  # key of metaworld.env_dict.ALL_V3_ENVIRONMENTS
    instructions: tuple[str, ...]
    expert: str  # class name in metaworld.policies
    max_steps: int  # about twice the expert's longest episode over 20 seeds

    def instruction(self, seed: int) -> str:
        """The phrasing an episode of `seed` gets: instructions[seed % count]."""
        return self.instructions[seed % len(self.instructions)]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "reach",
            "reach-v3",
            (
                "reach the goal",
                "move the gripper to the target",
                "put the hand on the goal marker",
                "go to the goal position",
            ),
            "SawyerReachV3Policy",
            150,
        ),
        TaskSpec(
            "push",
            "push-v3",
            (
                "push the puck to the goal",
                "slide the puck onto the target",
                "shove the puck over to the goal marker",
                "push the disc to the goal position",
            ),
            "SawyerPushV3Policy",
            150,
        ),
        TaskSpec(
            "pick-place",
            "pick-place-v3",
            (
                "pick up the puck and place it at the goal",
                "grasp the puck and put it on the target",
                "lift the puck and move it to the goal marker",
                "pick the disc up and drop it at the goal position",
            ),
            "SawyerPickPlaceV3Policy",
            150,
        ),
        TaskSpec(
            "drawer-open",
            "drawer-open-v3",
            (
                "open the drawer",
                "pull the drawer open",
                "slide the drawer out",
                "grab the drawer handle and pull it",
            ),
            "SawyerDrawerOpenV3Policy",
            200,
        ),
        TaskSpec(
            "button-press-topdown",
            "button-press-topdown-v3",
            (
                "press the button from the top",
                "push the button down",
                "press down on the button",
                "push the button down from above",
            ),
            "SawyerButtonPressTopdownV3Policy",
            150,
        ),
        TaskSpec(
            "drawer-close",
            "drawer-close-v3",
            (
                "close the drawer",
                "push the drawer shut",
                "slide the drawer closed",
            ),
            "SawyerDrawerCloseV3Policy",
            200,
        ),
        TaskSpec(
            "window-open",
            "window-open-v3",
            (
                "open the window",
                "slide the window open",
                "push the window handle to open it",
            ),
            "SawyerWindowOpenV3Policy",
            200,
        ),
        TaskSpec(
            "button-press",
            "button-press-v3",
            (
                "press the button on the wall",
                "push the button forward",
                "press the button from the front",
            ),
            "SawyerButtonPressV3Policy",
            150,
        ),
    )
}

# The task set of the evidence loop (demonstrations, training, evaluation).
DEFAULT_TASKS = ("reach", "push", "pick-place", "drawer-open", "button-press-topdown")


def get_task(name: str) -> TaskSpec:
    """The task called `name`; a SimError lists the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise SimError(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


# Held-out seeds: demonstrations use small seeds (0..~2000), evaluation starts far above them.
DEFAULT_EVAL_SEED = 100_000
