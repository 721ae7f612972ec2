"""chat.tree: the message tree as plain data."""

from chat.tree import Tree

# 1 ─ 2 ─ 3 ─ 4          a straight conversation...
#      └─ 5 ─ 6          ...whose reply 2 was regenerated as 5,
#          └─ 7 ─ 8      and a question after 5 was edited (6, then 7).
#              └─ 9
TREE = Tree.of([(1, None), (2, 1), (3, 2), (4, 3), (5, 1), (6, 5), (7, 5), (8, 7), (9, 7)])


def test_path_from_the_first_message():
    assert TREE.path_to(4) == [1, 2, 3, 4]
    assert TREE.path_to(9) == [1, 5, 7, 9]
    assert TREE.path_to(None) == []


def test_siblings_in_order():
    assert TREE.siblings(2) == TREE.siblings(5) == [2, 5]
    assert TREE.siblings(7) == [6, 7]
    assert TREE.siblings(1) == [1]
    assert TREE.siblings(8) == [8, 9]


def test_newest_leaf_follows_the_newest_child():
    assert TREE.newest_leaf(1) == 9
    assert TREE.newest_leaf(2) == 4
    assert TREE.newest_leaf(6) == 6
    assert TREE.newest_leaf(8) == 8


def test_roots_may_have_siblings():
    tree = Tree.of([(1, None), (2, 1), (3, None), (4, 3)])  # the first question edited
    assert tree.siblings(3) == [1, 3]
    assert tree.newest_leaf(3) == 4
    assert 4 in tree and 5 not in tree
